package rollout

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/otawatch/otawatch/events"
	"github.com/otawatch/otawatch/services/bridge"
	"github.com/otawatch/otawatch/services/internal/svc"
	"github.com/otawatch/otawatch/services/internal/testutil"
)

func testLog() *slog.Logger {
	if os.Getenv("OTAWATCH_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// rig is a real embedded JetStream with its MQTT listener, the real bridge,
// and a fleet of devices that answer desired state over MQTT.
type rig struct {
	t         testing.TB
	js        *testutil.JetStream
	broker    string
	dev       *responder
	instances []*instance
}

// mustStopAll kills every instance started so far.
func (r *rig) mustStopAll() {
	for _, in := range r.instances {
		in.stop(true)
	}
}

func newRig(t testing.TB, devices int, fail func(id string) bool) *rig {
	t.Helper()
	r := newBareRig(t)
	r.dev = startResponder(t, r.broker, "sensor", devices, fail)
	testutil.Eventually(t, 60*time.Second, func() bool { return r.js.Count(t, events.StreamShadow) >= uint64(devices) },
		"the devices' first reports did not reach SHADOW")
	return r
}

// newBareRig is the rig without devices, on the embedded server's MQTT
// listener.
func newBareRig(t testing.TB) *rig { return newBareRigOn(t, "") }

// newBareRigOn is the rig without devices on the broker at url (empty: the
// embedded server's MQTT listener).
func newBareRigOn(t testing.TB, url string) *rig {
	t.Helper()
	js := testutil.StartJetStream(t, testutil.JetStreamOptions{MQTT: url == ""})
	if url == "" {
		url = "tcp://" + js.Server.MQTTAddr()
	}
	r := &rig{t: t, js: js, broker: url}
	// The bridge, on its own connection.
	nc := r.connect()
	jsb, _ := jetstream.New(nc)
	health := svc.NewHealth()
	b, err := bridge.New(bridge.Config{Broker: r.broker, ClientID: "bridge-" + strings.ReplaceAll(t.Name(), "/", "-")},
		svc.Deps{Log: testLog(), NC: nc, JS: jsb, Streams: events.StreamOptions{Replicas: 1}, Health: health})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- b.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	// Devices may report only once the bridge's subscription exists: a
	// broker keeps QoS 1 messages for a session's subscriptions, not for
	// subscriptions still to come.
	testutil.Eventually(t, 30*time.Second, func() bool { return len(health.Status()) > 0 && health.Ready() },
		"the bridge never subscribed: %v", health.Status())
	return r
}

func (r *rig) connect() *nats.Conn {
	r.t.Helper()
	nc, err := nats.Connect(r.js.Server.ClientURL(), nats.Name(r.t.Name()))
	if err != nil {
		r.t.Fatal(err)
	}
	r.t.Cleanup(nc.Close)
	return nc
}

func testConfig(broker string) Config {
	c := Config{Broker: broker, Tick: 20 * time.Millisecond, LeaseTTL: time.Second, RetainedWait: time.Second, Rate: 5000}
	c.SetDefaults()
	return c
}

// instance is one running orchestrator.
type instance struct {
	s      *Service
	nc     *nats.Conn
	cancel context.CancelFunc
	done   chan error
	once   sync.Once
}

func (r *rig) start(name string, cfg Config, prep func(s *Service)) *instance {
	r.t.Helper()
	nc := r.connect()
	jsx, err := jetstream.New(nc)
	if err != nil {
		r.t.Fatal(err)
	}
	cfg.Instance = name
	s, err := New(cfg, svc.Deps{Log: testLog(), NC: nc, JS: jsx, Streams: events.StreamOptions{Replicas: 1}, Health: svc.NewHealth()})
	if err != nil {
		r.t.Fatal(err)
	}
	if prep != nil {
		prep(s)
	}
	ctx, cancel := context.WithCancel(context.Background())
	in := &instance{s: s, nc: nc, cancel: cancel, done: make(chan error, 1)}
	go func() { in.done <- s.Run(ctx) }()
	r.t.Cleanup(func() { in.stop(false) })
	r.instances = append(r.instances, in)
	testutil.Eventually(r.t, 10*time.Second, func() bool {
		select {
		case <-s.readyCh:
			return true
		default:
			return false
		}
	}, "instance %s never caught up", name)
	// It answers commands once its subscription is in.
	testutil.Eventually(r.t, 10*time.Second, func() bool { _, err := r.request("list", events.RolloutRequest{}); return err == nil },
		"instance %s never answered", name)
	return in
}

// stop stops the instance; kill first cuts its NATS connection, so it can
// neither mark what it sent nor release its lease, as a killed process.
func (in *instance) stop(kill bool) {
	in.once.Do(func() {
		if kill {
			in.nc.Close()
		}
		in.cancel()
		<-in.done
		in.nc.Close()
	})
}

func (r *rig) request(cmd string, req events.RolloutRequest) (*events.RolloutReply, error) {
	r.t.Helper()
	nc := r.js.NC
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	return events.RolloutRequestDo(ctx, nc, cmd, req)
}

func (r *rig) mustRequest(cmd string, req events.RolloutRequest) *events.RolloutReply {
	r.t.Helper()
	rep, err := r.request(cmd, req)
	if err != nil {
		r.t.Fatalf("%s: %v", cmd, err)
	}
	return rep
}

// waitStatus polls show until the job has one of the statuses.
func (r *rig) waitStatus(job string, timeout time.Duration, statuses ...string) *events.RolloutJob {
	r.t.Helper()
	var last *events.RolloutJob
	testutil.Eventually(r.t, timeout, func() bool {
		rep, err := r.request("show", events.RolloutRequest{JobID: job})
		if err != nil {
			return false
		}
		last = rep.Job
		for _, s := range statuses {
			if rep.Job.Status == s {
				return true
			}
		}
		return false
	}, "job %s never reached %v (last: %+v)", job, statuses, func() any {
		if last == nil {
			return nil
		}
		return fmt.Sprintf("status %s wave %d/%d total %+v", last.Status, last.Wave, last.WaveCount, last.Total)
	}())
	return last
}

// rolloutEvents returns the job's ROLLOUT events in order.
func (r *rig) rolloutEvents(job string) []events.Event {
	r.t.Helper()
	var out []events.Event
	for _, m := range r.js.Events(r.t, events.StreamRollout) {
		if !strings.HasPrefix(m.Subject, events.SubjectRollout+"."+job+".") {
			continue
		}
		e, err := events.Decode(m.Data)
		if err != nil {
			r.t.Fatal(err)
		}
		out = append(out, e)
	}
	return out
}

// responder plays a fleet on one MQTT connection: every device reports its
// firmware once, then installs whatever its delta topic asks and reports
// in_progress and then completed (or failed, for the devices fail picks).
// It counts the deltas each device received.
type responder struct {
	t      testing.TB
	client mqtt.Client
	typeID string
	fail   func(id string) bool
	delay  time.Duration

	mu       sync.Mutex
	received map[string]int
	wg       sync.WaitGroup
}

func deviceID(i int) string { return fmt.Sprintf("d-%05d", i) }

func startResponder(t testing.TB, broker, typeID string, devices int, fail func(string) bool) *responder {
	t.Helper()
	r := &responder{t: t, typeID: typeID, fail: fail, delay: 20 * time.Millisecond, received: map[string]int{}}
	o := mqtt.NewClientOptions().AddBroker(broker).SetClientID("devices-" + strings.ReplaceAll(t.Name(), "/", "-")).
		SetCleanSession(true).SetOrderMatters(false).SetAutoReconnect(true).SetMaxReconnectInterval(time.Second)
	r.client = mqtt.NewClient(o)
	if tok := r.client.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("devices connect: %v", tok.Error())
	}
	t.Cleanup(func() { r.wg.Wait(); r.client.Disconnect(100) })
	// Its own type only: a test may keep devices of another type offline.
	if tok := r.client.Subscribe("iot-2/type/"+typeID+"/id/+/shadow/delta", 1, r.onDelta); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("devices subscribe: %v", tok.Error())
	}
	var toks []mqtt.Token
	for i := 1; i <= devices; i++ {
		toks = append(toks, r.report(deviceID(i), "1.0.0", events.StatusCompleted, ""))
	}
	for _, tok := range toks {
		if !tok.WaitTimeout(30*time.Second) || tok.Error() != nil {
			t.Fatalf("first report: %v", tok.Error())
		}
	}
	return r
}

func (r *responder) report(id, version, status, code string) mqtt.Token {
	fw := map[string]any{"version": version, "timestamp": time.Now().UTC().Format(time.RFC3339Nano), "status": status,
		"checksum": "sha256:00", "previousVersion": "1.0.0", "errorCode": nil}
	if status != events.StatusInProgress {
		fw["updateDuration"] = 1.5
	}
	if code != "" {
		fw["errorCode"] = code
	}
	b, _ := json.Marshal(map[string]any{"state": map[string]any{"reported": map[string]any{"firmware": fw}}})
	return r.client.Publish(events.ReportTopic(r.typeID, id), 1, false, b)
}

func (r *responder) onDelta(_ mqtt.Client, m mqtt.Message) {
	parts := strings.Split(m.Topic(), "/")
	if len(parts) != 7 {
		return
	}
	id := parts[4]
	r.mu.Lock()
	r.received[id]++
	r.mu.Unlock()
	var d events.ShadowDelta
	if json.Unmarshal(m.Payload(), &d) != nil || d.State.Firmware == nil {
		return
	}
	version := d.State.Firmware.Version
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		r.report(id, version, events.StatusInProgress, "").WaitTimeout(10 * time.Second)
		time.Sleep(r.delay)
		if r.fail != nil && r.fail(id) {
			r.report(id, "1.0.0", events.StatusFailed, "E_FLASH_WRITE").WaitTimeout(10 * time.Second)
			return
		}
		r.report(id, version, events.StatusCompleted, "").WaitTimeout(10 * time.Second)
	}()
}

// counts returns how many devices received n deltas, by n.
func (r *responder) counts() map[int]int {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := map[int]int{}
	for _, n := range r.received {
		out[n]++
	}
	return out
}

func target() events.DesiredFirmware {
	return events.DesiredFirmware{Version: "2.0.0", Checksum: "sha256:" + strings.Repeat("be", 32), URL: "https://fw.example/2.0.0.bin"}
}

func TestRolloutCompletesWaveByWave(t *testing.T) {
	const devices = 1500
	r := newRig(t, devices, nil)
	r.start("a", testConfig(r.broker), nil)
	rep := r.mustRequest(CmdCreate, events.RolloutRequest{Start: true, Spec: &events.RolloutSpec{
		ID: "big", Target: target(), DeviceType: "sensor", DeviceTimeout: events.Duration(time.Minute)}})
	if rep.Job.WaveCount != 15 || rep.Job.Total.Targeted != devices {
		t.Fatalf("plan: %d waves, %d devices; want 15 waves of 100", rep.Job.WaveCount, rep.Job.Total.Targeted)
	}
	job := r.waitStatus("big", 90*time.Second, events.RolloutCompleted, events.RolloutPaused, events.RolloutAborted)
	if job.Status != events.RolloutCompleted {
		t.Fatalf("job %s: %s", job.Status, job.Reason)
	}
	if job.Total.Completed != devices {
		t.Errorf("completed %d of %d", job.Total.Completed, devices)
	}
	r.checkWaves("big", 15)
	// Each device got its desired state exactly once, and SHADOW holds one
	// desired event per device.
	if c := r.dev.counts(); c[1] != devices || len(c) != 1 {
		t.Errorf("deltas received per device: %v, want {1:%d}", c, devices)
	}
	desired := 0
	for _, m := range r.js.Events(t, events.StreamShadow) {
		if strings.HasPrefix(m.Subject, events.SubjectShadowDesired+".") {
			desired++
		}
	}
	if desired != devices {
		t.Errorf("%d shadow.desired events, want %d", desired, devices)
	}
}

func TestFailureRatePausesTheJob(t *testing.T) {
	// Half of wave 2 (devices 101..150) fails.
	fail := func(id string) bool { return id > deviceID(100) && id <= deviceID(150) }
	r := newRig(t, 300, fail)
	r.start("a", testConfig(r.broker), nil)
	r.mustRequest(CmdCreate, events.RolloutRequest{Start: true, Spec: &events.RolloutSpec{
		ID: "bad", Target: target(), DeviceType: "sensor", WaveSize: 100, MaxFailure: 0.2, MinFinished: 20}})
	job := r.waitStatus("bad", 60*time.Second, events.RolloutPaused, events.RolloutCompleted, events.RolloutAborted)
	if job.Status != events.RolloutPaused || job.By != events.ByFailurePolicy || job.Wave != 2 {
		t.Fatalf("job %s by %q at wave %d (%s), want paused by the failure policy at wave 2", job.Status, job.By, job.Wave, job.Reason)
	}
	if !strings.Contains(job.Reason, "failure policy: wave 2 has") {
		t.Errorf("reason %q", job.Reason)
	}
	// The paused job sends nothing more: wave 3 never started.
	time.Sleep(300 * time.Millisecond)
	job = r.mustRequest("show", events.RolloutRequest{JobID: "bad"}).Job
	if job.Waves[2].Status != events.WavePlanned || job.Waves[2].Progress.Queued != 100 {
		t.Errorf("wave 3: %+v", job.Waves[2])
	}
	if c := r.dev.counts(); c[1] > 200 {
		t.Errorf("%d devices received a delta, want at most the 200 of waves 1 and 2", c[1])
	}
	// The shadow delta (GET .../shadow/delta): the target for a device that
	// failed it, nothing for one in sync or never targeted.
	tests := []struct {
		device, want, code string
	}{
		{deviceID(101), "2.0.0", ""},
		{deviceID(1), "", ""},
		{deviceID(250), "", ""},
		{"ghost", "", events.RolloutErrNotFound},
	}
	for _, tt := range tests {
		rep, err := r.request("delta", events.RolloutRequest{TypeID: "sensor", DeviceID: tt.device})
		if tt.code != "" {
			if re, ok := err.(*events.RolloutError); !ok || re.Code != tt.code {
				t.Errorf("delta of %s: %v, want code %s", tt.device, err, tt.code)
			}
			continue
		}
		if err != nil {
			t.Fatalf("delta of %s: %v", tt.device, err)
		}
		got := ""
		if f := rep.Delta.State.Firmware; f != nil {
			got = f.Version
			if f.JobID != "bad" || f.URL != target().URL || f.Checksum != target().Checksum {
				t.Errorf("delta of %s: %+v", tt.device, f)
			}
		}
		if got != tt.want {
			t.Errorf("delta of %s asks for %q, want %q", tt.device, got, tt.want)
		}
	}
	// An operator's abort is the end of it; the front end's caller is
	// recorded on the event.
	msg := nats.NewMsg(events.RolloutCommandSubject(CmdAbort, events.ConnIdentity(r.js.NC)))
	msg.Data, _ = json.Marshal(events.RolloutRequest{JobID: "bad", Reason: "bad build"})
	msg.Header.Set(events.RolloutActorHeader, "alice")
	if m, err := r.js.NC.RequestMsg(msg, 10*time.Second); err != nil {
		t.Fatalf("abort: %v", err)
	} else if strings.Contains(string(m.Data), `"error"`) {
		t.Fatalf("abort: %s", m.Data)
	}
	evs := r.rolloutEvents("bad")
	var last events.RolloutData
	if err := evs[len(evs)-1].DecodeData(&last); err != nil || evs[len(evs)-1].Type != events.TypeRolloutJobAborted ||
		last.Actor != "alice" || last.Reason != "bad build" || last.By != events.ByOperator {
		t.Errorf("last event %s %+v, want job_aborted by alice", evs[len(evs)-1].Type, last)
	}
	_, err := r.request(CmdResume, events.RolloutRequest{JobID: "bad"})
	if err == nil || err.Error() != "cannot resume job bad: it is aborted" {
		t.Errorf("resume after abort: %v", err)
	}
}

func TestKilledMidWaveResumesWithoutResending(t *testing.T) {
	const devices = 300
	r := newRig(t, devices, nil)
	cfg := testConfig(r.broker)
	total := 0
	kill := make(chan struct{})
	a := r.start("a", cfg, func(s *Service) {
		s.hooks.crashAfterPublish = func(acked int) bool {
			// Crash in the middle of wave 2, after the broker acked a
			// batch and before it is marked sent.
			total += acked
			if total < 150 {
				return false
			}
			close(kill)
			return true
		}
	})
	// 3 waves of 100 at 100 a second.
	r.mustRequest(CmdCreate, events.RolloutRequest{Start: true, Spec: &events.RolloutSpec{
		ID: "crash", Target: target(), DeviceType: "sensor", WaveSize: 100, Rate: 100}})
	select {
	case <-kill:
	case <-time.After(60 * time.Second):
		t.Fatal("the driver never reached the crash point")
	}
	a.stop(true)
	b := r.start("b", cfg, nil)
	job := r.waitStatus("crash", 90*time.Second, events.RolloutCompleted, events.RolloutPaused, events.RolloutAborted)
	if job.Status != events.RolloutCompleted {
		t.Fatalf("job %s: %s", job.Status, job.Reason)
	}
	st := b.s.Stats()
	if st.RetainedConfirmed == 0 {
		t.Errorf("the restarted driver found no unconfirmed send on the broker: the crash point was not exercised (%+v)", st)
	}
	if st.Resent != 0 {
		t.Errorf("resent %d deltas the broker already had", st.Resent)
	}
	if c := r.dev.counts(); c[1] != devices || len(c) != 1 {
		t.Errorf("deltas received per device: %v, want {1:%d}", c, devices)
	}
	r.checkWaves("crash", 3)
}

func TestSecondInstanceTakesOver(t *testing.T) {
	const devices = 400
	r := newRig(t, devices, nil)
	cfg := testConfig(r.broker)
	a := r.start("a", cfg, nil)
	testutil.Eventually(t, 10*time.Second, a.s.Driving, "the first instance never took the lease")
	b := r.start("b", cfg, nil)
	// Slow enough to kill the driver mid-rollout: 100/s, 4 waves of 100.
	r.mustRequest(CmdCreate, events.RolloutRequest{Start: true, Spec: &events.RolloutSpec{
		ID: "ha", Target: target(), DeviceType: "sensor", WaveSize: 100, Rate: 100}})
	testutil.Eventually(t, 30*time.Second, func() bool {
		job := r.mustRequest("show", events.RolloutRequest{JobID: "ha"}).Job
		return job.Wave >= 2
	}, "the job never reached wave 2")
	if b.s.Driving() {
		t.Fatal("both instances drive")
	}
	if n := b.s.Stats().DeltasPublished; n != 0 {
		t.Fatalf("the standby sent %d deltas", n)
	}
	a.stop(true)
	testutil.Eventually(t, 10*time.Second, b.s.Driving, "the second instance never took over")
	job := r.waitStatus("ha", 60*time.Second, events.RolloutCompleted, events.RolloutPaused, events.RolloutAborted)
	if job.Status != events.RolloutCompleted {
		t.Fatalf("job %s: %s", job.Status, job.Reason)
	}
	if b.s.Stats().DeltasPublished == 0 {
		t.Error("the second instance sent nothing after taking over")
	}
	if c := r.dev.counts(); c[1] != devices || len(c) != 1 {
		t.Errorf("deltas received per device: %v, want {1:%d}", c, devices)
	}
}

// checkWaves checks the job's lifecycle events: created, started, then each
// wave started, gated (with a passed gate) and completed once, in order,
// then completed.
func (r *rig) checkWaves(job string, waves int) {
	r.t.Helper()
	var seq []string
	for _, e := range r.rolloutEvents(job) {
		var d events.RolloutData
		if err := e.DecodeData(&d); err != nil {
			r.t.Fatal(err)
		}
		name := events.RolloutEventName(e.Type)
		switch name {
		case "devices_sent":
			continue
		case "wave_gated":
			if d.Gate == nil || !d.Gate.Passed || d.Gate.Completed < d.Gate.Required || d.Gate.Required < 90 {
				r.t.Errorf("wave %d gated with %+v", d.Wave, d.Gate)
			}
		}
		if d.Wave > 0 {
			name += fmt.Sprint(d.Wave)
		}
		seq = append(seq, name)
	}
	want := []string{"job_created", "job_started"}
	for w := 1; w <= waves; w++ {
		want = append(want, fmt.Sprint("wave_started", w), fmt.Sprint("wave_gated", w), fmt.Sprint("wave_completed", w))
	}
	want = append(want, "job_completed")
	if strings.Join(seq, " ") != strings.Join(want, " ") {
		r.t.Errorf("events\n got %s\nwant %s", strings.Join(seq, " "), strings.Join(want, " "))
	}
}
