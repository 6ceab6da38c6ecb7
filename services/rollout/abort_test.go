package rollout

import (
	"context"
	"encoding/json"
	"net/http"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/otawatch/otawatch/events"
	"github.com/otawatch/otawatch/services/api"
	"github.com/otawatch/otawatch/services/internal/svc"
	"github.com/otawatch/otawatch/services/internal/testutil"
)

// connectMQTT connects a plain MQTT client (clean session) and disconnects
// it when the test ends.
func connectMQTT(t testing.TB, broker, id string) mqtt.Client {
	t.Helper()
	c := mqtt.NewClient(mqtt.NewClientOptions().AddBroker(broker).SetClientID(id).SetCleanSession(true))
	if tok := c.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("mqtt connect %s: %v", id, tok.Error())
	}
	t.Cleanup(func() { c.Disconnect(50) })
	return c
}

func waitToken(t testing.TB, what string, tok mqtt.Token) {
	t.Helper()
	if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("%s: %v", what, tok.Error())
	}
}

// reportOnce makes devices known to the fleet without them listening: one
// plain client publishes a completed report of 1.0.0 for each and
// disconnects, so the devices are offline when their deltas are sent.
func (r *rig) reportOnce(typeID string, ids ...string) {
	r.t.Helper()
	before := r.js.Count(r.t, events.StreamShadow)
	c := connectMQTT(r.t, r.broker, "once-"+typeID)
	for _, id := range ids {
		b, _ := json.Marshal(map[string]any{"state": map[string]any{"reported": map[string]any{"firmware": map[string]any{
			"version": "1.0.0", "timestamp": time.Now().UTC().Format(time.RFC3339Nano), "status": events.StatusCompleted,
			"checksum": "sha256:00", "updateDuration": 1.5, "errorCode": nil}}}})
		waitToken(r.t, "report "+id, c.Publish(events.ReportTopic(typeID, id), 1, false, b))
	}
	c.Disconnect(50)
	testutil.Eventually(r.t, 30*time.Second, func() bool { return r.js.Count(r.t, events.StreamShadow) >= before+uint64(len(ids)) },
		"the reports of %d %s devices did not reach SHADOW", len(ids), typeID)
}

// retainedOn returns what a device connecting now receives as retained
// messages on the topic filters: payload by topic. To know that nothing
// more is coming it subscribes last to a marker topic holding a retained
// message of its own: the broker sends a subscription's retained messages
// in order, so once the marker arrives the filters' ones have.
func retainedOn(t *testing.T, broker string, filters ...string) map[string][]byte {
	t.Helper()
	name := strings.NewReplacer("/", "-", " ", "-").Replace(t.Name())
	marker := "otawatch-test/marker/" + name
	pub := connectMQTT(t, broker, "marker-"+name)
	waitToken(t, "publish marker", pub.Publish(marker, 1, true, "marker"))
	var mu sync.Mutex
	got := map[string][]byte{}
	seen := make(chan struct{})
	var once sync.Once
	on := func(_ mqtt.Client, m mqtt.Message) {
		if m.Topic() == marker {
			once.Do(func() { close(seen) })
			return
		}
		mu.Lock()
		defer mu.Unlock()
		if m.Retained() {
			got[m.Topic()] = m.Payload()
		}
	}
	c := connectMQTT(t, broker, "device-check-"+name)
	for _, f := range filters {
		waitToken(t, "subscribe "+f, c.Subscribe(f, 0, on))
	}
	waitToken(t, "subscribe marker", c.Subscribe(marker, 0, on))
	select {
	case <-seen:
	case <-time.After(10 * time.Second):
		t.Fatal("the retained marker never arrived")
	}
	c.Disconnect(50)
	waitToken(t, "clear marker", pub.Publish(marker, 1, true, []byte{}))
	mu.Lock()
	defer mu.Unlock()
	return got
}

// startAPI runs the HTTP API on the rig's JetStream (no tokens: loopback)
// and returns its base URL.
func (r *rig) startAPI() string {
	r.t.Helper()
	nc := r.connect()
	jsx, err := jetstream.New(nc)
	if err != nil {
		r.t.Fatal(err)
	}
	s, err := api.New(api.Config{Listen: "127.0.0.1:0"}, svc.Deps{Log: testLog(), NC: nc, JS: jsx,
		Streams: events.StreamOptions{Replicas: 1}, Health: svc.NewHealth()})
	if err != nil {
		r.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	r.t.Cleanup(func() { cancel(); <-done })
	testutil.Eventually(r.t, 10*time.Second, func() bool { return s.Addr() != "" }, "the api never listened")
	return "http://" + s.Addr()
}

// httpDelta is the firmware version GET .../shadow/delta asks the device
// for ("" when in sync).
func httpDelta(t *testing.T, base, typeID, deviceID string) string {
	t.Helper()
	resp, err := http.Get(base + "/api/v0002/device/types/" + typeID + "/devices/" + deviceID + "/shadow/delta")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var d events.ShadowDelta
	if resp.StatusCode != http.StatusOK || json.NewDecoder(resp.Body).Decode(&d) != nil {
		t.Fatalf("GET shadow delta of %s/%s: %s", typeID, deviceID, resp.Status)
	}
	if d.State.Firmware == nil {
		return ""
	}
	return d.State.Firmware.Version
}

// poll is testutil.Eventually without failing: whether cond held in time.
func poll(timeout time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(20 * time.Millisecond)
	}
	return true
}

// retractedEvents returns the devices of the job's devices_retracted
// events, one string per event.
func (r *rig) retractedEvents(job string) []string {
	r.t.Helper()
	var out []string
	for _, e := range r.rolloutEvents(job) {
		if e.Type != events.TypeRolloutDevicesRetracted {
			continue
		}
		var d events.RolloutData
		if err := e.DecodeData(&d); err != nil {
			r.t.Fatal(err)
		}
		var s []string
		for _, ref := range d.Devices {
			s = append(s, ref.String())
		}
		out = append(out, strings.Join(s, ","))
	}
	return out
}

func TestAbortClearsTheDeltaOfADeviceThatWasOffline(t *testing.T) {
	r := newBareRigOn(t, testutil.StartMosquitto(t).URL)
	r.dev = startResponder(t, r.broker, "sensor", 2, nil)
	r.reportOnce("gadget", "g-off")
	testutil.Eventually(t, 30*time.Second, func() bool { return r.js.Count(t, events.StreamShadow) >= 3 },
		"the sensors' first reports did not reach SHADOW")
	r.start("a", testConfig(r.broker), nil)
	base := r.startAPI()
	offTopic, doneTopic := events.DeltaTopic("gadget", "g-off"), events.DeltaTopic("sensor", deviceID(1))

	r.mustRequest(CmdCreate, events.RolloutRequest{Start: true, Spec: &events.RolloutSpec{ID: "stop", Target: target(),
		Devices: []string{"sensor/" + deviceID(1), "sensor/" + deviceID(2), "gadget/g-off"}, WaveSize: 10}})
	// One wave: the sensors install and complete; g-off is offline, so the
	// gate (90% of 3 online devices) holds the job in its wave.
	testutil.Eventually(t, 30*time.Second, func() bool {
		j := r.mustRequest("show", events.RolloutRequest{JobID: "stop"}).Job
		return j.Total.Completed == 2 && j.Total.Pending == 1
	}, "the sensors did not complete")
	// Before the abort, g-off is asked for 2.0.0 on both paths.
	if got := retainedOn(t, r.broker, offTopic); len(got[offTopic]) == 0 {
		t.Fatalf("no retained delta for g-off before the abort: the test would show nothing (%v)", got)
	}
	testutil.Eventually(t, 10*time.Second, func() bool { return httpDelta(t, base, "gadget", "g-off") == "2.0.0" },
		"before the abort the HTTP delta of g-off does not ask for 2.0.0")

	r.mustRequest(CmdAbort, events.RolloutRequest{JobID: "stop", Reason: "bad build"})
	var job *events.RolloutJob
	cleared := poll(10*time.Second, func() bool {
		job = r.mustRequest("show", events.RolloutRequest{JobID: "stop"}).Job
		return job.Retracted == 1 && job.RetractPending == 0
	})

	// g-off connects and subscribes to its delta topic: nothing retained.
	// The completed sensor's delta stays: it needed no clear.
	got := retainedOn(t, r.broker, offTopic, doneTopic)
	if p, ok := got[offTopic]; ok {
		t.Errorf("g-off receives the aborted job's delta on connecting: %s", p)
	}
	if len(got[doneTopic]) == 0 {
		t.Errorf("the completed device's retained delta was cleared")
	}
	if !cleared {
		t.Fatalf("show after the abort: %d retracted, %d pending; want 1, 0", job.Retracted, job.RetractPending)
	}
	if ev := r.retractedEvents("stop"); len(ev) != 1 || ev[0] != "gadget/g-off" {
		t.Errorf("devices_retracted events %q, want one naming gadget/g-off", ev)
	}
	// The completed sensors were sent nothing more (a clear reaches a
	// subscribed device as an empty message, which the responder counts).
	if c := r.dev.counts(); c[1] != 2 || len(c) != 1 {
		t.Errorf("messages received per sensor: %v, want {1:2}", c)
	}
	// The delta over HTTP and from the rollout service: nothing for g-off.
	testutil.Eventually(t, 10*time.Second, func() bool { return httpDelta(t, base, "gadget", "g-off") == "" },
		"the HTTP delta still asks g-off to install the aborted job's firmware")
	rep := r.mustRequest("delta", events.RolloutRequest{TypeID: "gadget", DeviceID: "g-off"})
	if rep.Delta.State.Firmware != nil {
		t.Errorf("the rollout service's delta for g-off: %+v, want none", rep.Delta.State.Firmware)
	}
}

func TestAbortRetractionsSurviveARestart(t *testing.T) {
	const devices = 40
	r := newBareRigOn(t, testutil.StartMosquitto(t).URL)
	var ids, refs []string
	for i := 1; i <= devices; i++ {
		id := deviceID(i)
		ids, refs = append(ids, id), append(refs, "gadget/"+id)
	}
	r.reportOnce("gadget", ids...)
	cfg := testConfig(r.broker)
	crashed := make(chan int, 1)
	a := r.start("a", cfg, func(s *Service) {
		s.hooks.crashAfterRetract = func(acked int) bool {
			// Crash after the broker cleared the first batch, before it
			// is recorded.
			select {
			case crashed <- acked:
			default:
			}
			return true
		}
	})
	// 200/s with 20 ms ticks: clears go in batches of at most 8.
	r.mustRequest(CmdCreate, events.RolloutRequest{Start: true, Spec: &events.RolloutSpec{ID: "stop", Target: target(),
		Devices: refs, WaveSize: 100, Rate: 200}})
	testutil.Eventually(t, 30*time.Second, func() bool {
		return r.mustRequest("show", events.RolloutRequest{JobID: "stop"}).Job.Total.Pending == devices
	}, "the deltas were not all sent")
	filter := "iot-2/type/gadget/id/+/shadow/delta"
	if got := retainedOn(t, r.broker, filter); len(got) != devices {
		t.Fatalf("%d retained deltas before the abort, want %d", len(got), devices)
	}
	r.mustRequest(CmdAbort, events.RolloutRequest{JobID: "stop"})
	var first int
	select {
	case first = <-crashed:
	case <-time.After(30 * time.Second):
		t.Fatal("the driver never reached the crash point")
	}
	if first == 0 || first >= devices {
		t.Fatalf("the first batch cleared %d of %d: the crash must come part way", first, devices)
	}
	a.stop(true)
	if ev := r.retractedEvents("stop"); len(ev) != 0 {
		t.Fatalf("devices_retracted recorded before the crash: %q", ev)
	}

	b := r.start("b", cfg, nil)
	var job *events.RolloutJob
	testutil.Eventually(t, 30*time.Second, func() bool {
		job = r.mustRequest("show", events.RolloutRequest{JobID: "stop"}).Job
		return job.RetractPending == 0
	}, "the restarted driver did not finish the clears")
	if job.Retracted != devices {
		t.Errorf("%d retracted, want %d", job.Retracted, devices)
	}
	// Every device is recorded once, the crashed batch included (cleared
	// again by the new driver, which is harmless).
	var marked []string
	for _, ev := range r.retractedEvents("stop") {
		marked = append(marked, strings.Split(ev, ",")...)
	}
	sort.Strings(marked)
	if strings.Join(marked, " ") != strings.Join(refs, " ") {
		t.Errorf("devices recorded as retracted:\n got %v\nwant %v", marked, refs)
	}
	if st := b.s.Stats(); st.DeltasRetracted != devices || st.DeltasPublished != 0 {
		t.Errorf("restarted driver: %+v; want %d clears and no send", st, devices)
	}
	if got := retainedOn(t, r.broker, filter); len(got) != 0 {
		t.Errorf("%d devices still have a retained delta after the abort", len(got))
	}
}
