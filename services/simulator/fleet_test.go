package simulator

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/otawatch/otawatch/events"
	"github.com/otawatch/otawatch/services/internal/identity"
	"github.com/otawatch/otawatch/services/internal/testutil"
)

// broker is an MQTT broker a test runs against.
type broker struct {
	name  string
	start func(t *testing.T) (url string)
}

// links are the ways devices reach the broker: a connection each,
// multiplexed with a subscription per device, multiplexed under wildcards.
var links = []struct {
	name     string
	conns    int
	wildcard bool
}{{"own", 0, false}, {"mux", 3, false}, {"wildcard", 3, true}}

// brokers are the embedded NATS server's MQTT listener, Mosquitto, and
// Mosquitto locked down as deploy/mosquitto ships it, where every device
// authenticates as itself (see secured).
var brokers = []broker{
	{"nats-mqtt", func(t *testing.T) string {
		js := testutil.StartJetStream(t, testutil.JetStreamOptions{MQTT: true, NoStreams: true})
		return "tcp://" + js.Server.MQTTAddr()
	}},
	{"mosquitto", func(t *testing.T) string { return testutil.StartMosquitto(t).URL }},
	{"mosquitto-auth", func(t *testing.T) string {
		var devs []identity.Credential
		for i := 1; i <= securedDevices; i++ {
			id := DeviceID(i, 5)
			devs = append(devs, identity.Credential{ID: id, Password: identity.DerivePassword(testSecret, id)})
		}
		url := testutil.StartMosquittoAuth(t, testutil.MosquittoAuth{Devices: devs}).URL
		secured.Store(url, true)
		return url
	}},
}

// A locked-down test broker knows the first securedDevices devices, each
// with the password derived from testSecret; its collector logs in as the
// bridge and its rollout as the rollout service.
const securedDevices = 100

var (
	testSecret = []byte("simulator-test-secret")
	secured    sync.Map // broker URL -> true
)

// isSecured reports whether the broker at url is locked down.
func isSecured(url string) bool {
	_, ok := secured.Load(url)
	return ok
}

// secretFor is the PasswordSecret of a fleet on the broker at url: nil
// unless the broker is locked down.
func secretFor(url string) []byte {
	if isSecured(url) {
		return testSecret
	}
	return nil
}

// login sets user and password on opts when the broker at url is locked
// down.
func login(opts *mqtt.ClientOptions, url, user, password string) *mqtt.ClientOptions {
	if isSecured(url) {
		opts.SetUsername(user).SetPassword(password)
	}
	return opts
}

// skipMux skips a multiplexed link on a locked-down broker: devices that
// authenticate as themselves have a connection each.
func skipMux(t *testing.T, url string, conns int) {
	if conns > 0 && isSecured(url) {
		t.Skip("devices that authenticate as themselves need a connection each")
	}
}

// received is one report a collector got.
type received struct {
	topic   string
	payload []byte
	fw      events.Firmware
}

// collector subscribes to every device's reports, as the bridge does, on a
// persistent session that survives a broker restart.
type collector struct {
	mu   sync.Mutex
	msgs []received
}

func collect(t *testing.T, url string) *collector {
	t.Helper()
	c := &collector{}
	handler := func(_ mqtt.Client, m mqtt.Message) {
		var r report
		if err := json.Unmarshal(m.Payload(), &r); err != nil {
			t.Errorf("report on %s is not JSON: %v", m.Topic(), err)
			return
		}
		c.mu.Lock()
		c.msgs = append(c.msgs, received{topic: m.Topic(), payload: append([]byte(nil), m.Payload()...), fw: r.State.Reported.Firmware})
		c.mu.Unlock()
	}
	opts := login(mqtt.NewClientOptions(), url, testutil.BridgeUser, testutil.BridgePassword).AddBroker(url).SetClientID("test-collector").SetCleanSession(false).
		SetAutoReconnect(true).SetMaxReconnectInterval(time.Second).SetOrderMatters(true).
		SetDefaultPublishHandler(handler)
	cl := mqtt.NewClient(opts)
	if tok := cl.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("collector connect: %v", tok.Error())
	}
	if tok := cl.Subscribe(events.ReportTopicFilter, 1, handler); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("collector subscribe: %v", tok.Error())
	}
	t.Cleanup(func() { cl.Disconnect(100) })
	return c
}

func (c *collector) all() []received {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]received(nil), c.msgs...)
}

// wait waits until the collector has n reports. Under load the NATS MQTT
// listener was seen to hold back one of 40 QoS 1 messages for more than
// 10 s; the bound covers its redelivery (ack wait 30 s), and a wait that
// long is logged.
func (c *collector) wait(t *testing.T, n int) {
	t.Helper()
	start := time.Now()
	testutil.Eventually(t, 45*time.Second, func() bool { return c.count() >= n }, "collector got %d of %d reports", c.count(), n)
	if d := time.Since(start); d > 5*time.Second {
		t.Logf("collector waited %s for its %d reports", d.Round(time.Millisecond), n)
	}
}

func (c *collector) count() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.msgs)
}

// byDevice groups reports by device id, in arrival order.
func (c *collector) byDevice(t *testing.T) map[string][]events.Firmware {
	out := map[string][]events.Firmware{}
	for _, m := range c.all() {
		_, id, err := events.ParseReportTopic(m.topic)
		if err != nil {
			t.Fatalf("report topic: %v", err)
		}
		out[id] = append(out[id], m.fw)
	}
	return out
}

// rollout publishes desired states, QoS 1 and retained, as the rollout
// service does.
type rollout struct{ cl mqtt.Client }

func newRollout(t *testing.T, url string) *rollout {
	t.Helper()
	cl := mqtt.NewClient(login(mqtt.NewClientOptions(), url, testutil.RolloutUser, testutil.RolloutPassword).AddBroker(url).SetClientID("test-rollout").SetCleanSession(true))
	if tok := cl.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("rollout connect: %v", tok.Error())
	}
	t.Cleanup(func() { cl.Disconnect(100) })
	return &rollout{cl: cl}
}

func (r *rollout) send(t *testing.T, typeID, deviceID string, payload []byte) {
	t.Helper()
	tok := r.cl.Publish(events.DeltaTopic(typeID, deviceID), 1, true, payload)
	if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("publish desired state to %s: %v", deviceID, tok.Error())
	}
}

// waitRetained waits until a new subscription to the delta topics of ids
// gets a retained message for each.
func waitRetained(t *testing.T, url string, ids []string) {
	t.Helper()
	testutil.Eventually(t, 10*time.Second, func() bool {
		got := make(chan string, len(ids))
		cl := mqtt.NewClient(login(mqtt.NewClientOptions(), url, testutil.RolloutUser, testutil.RolloutPassword).AddBroker(url).SetClientID("test-retained").SetCleanSession(true))
		if tok := cl.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
			return false
		}
		defer cl.Disconnect(0)
		topics := map[string]byte{}
		for _, id := range ids {
			topics[events.DeltaTopic(DefaultType, id)] = 1
		}
		cl.SubscribeMultiple(topics, func(_ mqtt.Client, m mqtt.Message) {
			if m.Retained() {
				got <- m.Topic()
			}
		})
		seen := map[string]bool{}
		for deadline := time.After(time.Second); len(seen) < len(ids); {
			select {
			case tp := <-got:
				seen[tp] = true
			case <-deadline:
				return false
			}
		}
		return true
	}, "retained desired states not all stored")
}

// runFleet starts f.Run and waits until the fleet is connected; the fleet
// stops at the end of the test (its error checked then).
func runFleet(t *testing.T, f *Fleet) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- f.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("fleet run: %v", err)
		}
	})
	select {
	case <-f.Ready():
	case err := <-done:
		t.Fatalf("fleet stopped before it was ready: %v", err)
	case <-time.After(60 * time.Second):
		t.Fatal("fleet not connected after 60 s")
	}
}

func testLogger(t *testing.T) *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return nil
}

// checkSequences checks every device's reports form update cycles: an
// in_progress, then completed or failed of the same version from the same
// previous version; the next update starts from what the last one left.
func checkSequences(t *testing.T, byDev map[string][]events.Firmware, from string) {
	t.Helper()
	for id, fws := range byDev {
		installed := from
		var prevTS time.Time
		for i, fw := range fws {
			if !fw.Timestamp.After(prevTS) {
				t.Errorf("%s report %d: timestamp %s not after %s", id, i, fw.Timestamp, prevTS)
			}
			prevTS = fw.Timestamp
			if i%2 == 0 {
				if fw.Status != statusInProgress || fw.PreviousVersion != installed {
					t.Errorf("%s report %d: %s from %s, want in_progress from %s", id, i, fw.Status, fw.PreviousVersion, installed)
				}
				continue
			}
			start := fws[i-1]
			if fw.Status == statusInProgress || fw.Version != start.Version || fw.PreviousVersion != start.PreviousVersion {
				t.Errorf("%s report %d: %s %s from %s after in_progress %s from %s", id, i, fw.Status, fw.Version, fw.PreviousVersion, start.Version, start.PreviousVersion)
			}
			if fw.Status == statusCompleted {
				installed = fw.Version
			}
		}
	}
}

// TestStandaloneReports: a standalone fleet publishes exactly Count reports,
// each a valid seed payload, forming consistent update cycles per device;
// on both brokers, with a connection per device and multiplexed.
func TestStandaloneReports(t *testing.T) {
	schema := reportSchema(t)
	for _, b := range brokers {
		for _, conns := range []int{0, 4} {
			t.Run(fmt.Sprintf("%s/connections=%d", b.name, conns), func(t *testing.T) {
				url := b.start(t)
				skipMux(t, url, conns)
				col := collect(t, url)
				const n = 400
				f, err := NewFleet(FleetConfig{
					Broker: url, PasswordSecret: secretFor(url), Devices: 40, Connections: conns, Count: n, Rate: 0,
					TimeScale: 1000, DurationMean: 2 * time.Second, DurationStddev: time.Second,
					FailureRate: 0.2, Seed: 11,
				}, testLogger(t))
				if err != nil {
					t.Fatal(err)
				}
				ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
				defer cancel()
				if err := f.Run(ctx); err != nil {
					t.Fatal(err)
				}
				if ctx.Err() != nil {
					t.Fatal("run ended by the test's timeout, not by the count")
				}
				s := f.Stats()
				if s.Sent() != n || s.PublishErrors != 0 {
					t.Fatalf("stats: %d sent, %d errors; want %d and 0 (%s)", s.Sent(), s.PublishErrors, n, s)
				}
				col.wait(t, n)
				if got := col.count(); got != n {
					t.Fatalf("collector got %d reports, want %d", got, n)
				}
				statuses := map[string]int{}
				for _, m := range col.all() {
					fw := checkReport(t, schema, m.payload)
					statuses[fw.Status]++
				}
				if statuses[statusInProgress] != int(s.SentProgress) || statuses[statusCompleted] != int(s.SentCompleted) || statuses[statusFailed] != int(s.SentFailed) {
					t.Errorf("collector statuses %v, stats %s", statuses, s)
				}
				if statuses[statusFailed] == 0 || statuses[statusCompleted] == 0 {
					t.Errorf("statuses %v: want both outcomes at failure rate 0.2", statuses)
				}
				checkSequences(t, col.byDevice(t), DefaultFromVersion)
			})
		}
	}
}

// TestStandaloneReadmeFleet is the README's main command: 1500 devices,
// each with its own connection, against the embedded NATS MQTT listener.
func TestStandaloneReadmeFleet(t *testing.T) {
	if testing.Short() {
		t.Skip("1500 connections")
	}
	js := testutil.StartJetStream(t, testutil.JetStreamOptions{MQTT: true, NoStreams: true})
	url := "tcp://" + js.Server.MQTTAddr()
	col := collect(t, url)
	const n = 4500
	f, err := NewFleet(FleetConfig{
		Broker: url, Devices: 1500, Count: n, Rate: 0, TimeScale: 100, Seed: 1, FailureRate: 0.04,
	}, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	if err := f.Run(ctx); err != nil || ctx.Err() != nil {
		t.Fatalf("run: %v (ctx %v)", err, ctx.Err())
	}
	if s := f.Stats(); s.Sent() != n {
		t.Fatalf("%d sent, want %d: %s", s.Sent(), n, s)
	}
	col.wait(t, n)
	byDev := col.byDevice(t)
	if len(byDev) != 1500 {
		t.Errorf("%d devices reported, want 1500", len(byDev))
	}
	checkSequences(t, byDev, DefaultFromVersion)
}

// waitFinished waits until every device in ids has ended an update; on
// timeout it fails with the fleet's stats and the state of every device
// that has not.
func waitFinished(t *testing.T, f *Fleet, ids []string, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		var open []DeviceState
		for _, id := range ids {
			if st, _ := f.Device(id); st.LastStatus == "" {
				open = append(open, st)
			}
		}
		if len(open) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %s, %d of %d devices have not finished an update: %s\nfirst: %+v", timeout, len(open), len(ids), f.Stats(), open[0])
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// checkInstalledOnce checks each device of ids reported exactly one update
// to version (in_progress, then its outcome) and agrees with the collector.
func checkInstalledOnce(t *testing.T, f *Fleet, col *collector, ids []string, version string) (failed int) {
	t.Helper()
	byDev := col.byDevice(t)
	for _, id := range ids {
		st, _ := f.Device(id)
		fws := byDev[id]
		var got []string
		for _, fw := range fws {
			got = append(got, fw.Status+" "+fw.Version)
		}
		want := []string{"in_progress " + version, st.LastStatus + " " + version}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("%s reported %v, want %v", id, got, want)
		}
		if st.Installs != 1 {
			t.Errorf("%s installed %d times, want once", id, st.Installs)
		}
		if st.LastStatus == statusFailed {
			failed++
			if len(fws) == 2 && (fws[1].ErrorCode == nil || *fws[1].ErrorCode != st.LastErrorCode) {
				t.Errorf("%s failed with code %v, device says %q", id, fws[1].ErrorCode, st.LastErrorCode)
			}
		} else if st.Installed != version {
			t.Errorf("%s runs %s after completing %s", id, st.Installed, version)
		}
	}
	return failed
}

// TestFleetDesiredState: devices install what the rollout publishes:
// retained before they connect and live after; each reports in_progress
// then its outcome for the target, installs once even when the desired
// state comes again (published again, or replayed on resubscribe), and
// devices not targeted stay silent.
func TestFleetDesiredState(t *testing.T) {
	ts := time.Date(2026, 11, 25, 11, 0, 0, 0, time.UTC)
	for _, b := range brokers {
		for _, lk := range links {
			t.Run(b.name+"/"+lk.name, func(t *testing.T) {
				url := b.start(t)
				skipMux(t, url, lk.conns)
				col := collect(t, url)
				ro := newRollout(t, url)
				f, err := NewFleet(FleetConfig{
					Broker: url, PasswordSecret: secretFor(url), Mode: ModeFleet, Devices: 30, Connections: lk.conns, Wildcard: lk.wildcard, TimeScale: 100,
					DurationMean: 10 * time.Second, DurationStddev: 3 * time.Second, FailureRate: 0.3, Seed: 7,
				}, testLogger(t))
				if err != nil {
					t.Fatal(err)
				}
				ids := f.DeviceIDs()
				delta := deltaPayload(t, "4.2.0", "job-1", ts)
				early, late, idle := ids[:10], ids[10:20], ids[20:]
				for _, id := range early {
					ro.send(t, DefaultType, id, delta)
				}
				// The NATS MQTT listener indexes retained messages
				// asynchronously after the PUBACK: wait until a subscriber
				// is sure to get them.
				waitRetained(t, url, early)
				runFleet(t, f)
				for _, id := range late {
					ro.send(t, DefaultType, id, delta)
				}
				targeted := ids[:20]
				waitFinished(t, f, targeted, 30*time.Second)
				col.wait(t, 40)
				failed := checkInstalledOnce(t, f, col, targeted, "4.2.0")
				if failed == 0 || failed == len(targeted) {
					t.Errorf("%d of %d failed at failure rate 0.3", failed, len(targeted))
				}
				for _, id := range targeted {
					if n := f.DeltasReceived(id); n != 1 {
						t.Errorf("%s received %d desired states, want 1", id, n)
					}
				}
				for _, id := range idle {
					if st, _ := f.Device(id); st.DeltaDeliveries != 0 || st.Installs != 0 {
						t.Errorf("untargeted %s: %d deliveries, %d installs", id, st.DeltaDeliveries, st.Installs)
					}
				}

				// The same desired state published again: received, not installed.
				for _, id := range late[:5] {
					ro.send(t, DefaultType, id, delta)
				}
				testutil.Eventually(t, 10*time.Second, func() bool {
					for _, id := range late[:5] {
						if f.DeltasReceived(id) != 2 {
							return false
						}
					}
					return true
				}, "the second publish did not arrive")

				// An outage: back online the device gets the retained desired
				// state again (multiplexed: on resubscribe) or nothing (its
				// own session, which the broker kept; under a wildcard NATS
				// does not replay what the session already had); either way
				// no install.
				id := early[0]
				if err := f.SetOffline(id); err != nil {
					t.Fatal(err)
				}
				if err := f.SetOnline(id); err != nil {
					t.Fatal(err)
				}
				if lk.name == "mux" || (lk.name == "wildcard" && b.name == "mosquitto") {
					testutil.Eventually(t, 10*time.Second, func() bool {
						st, _ := f.Device(id)
						return st.DeltaDeliveries == 2
					}, "no retained replay on resubscribe")
					if n := f.DeltasReceived(id); n != 1 {
						t.Errorf("a retained replay counted as received: %d, want 1", n)
					}
				}
				for _, id := range targeted {
					if st, _ := f.Device(id); st.Installs != 1 {
						t.Errorf("%s installed %d times, want once", id, st.Installs)
					}
				}
				if s := f.Stats(); s.Installs != 20 {
					t.Errorf("fleet installs %d, want 20", s.Installs)
				}
			})
		}
	}
}

// TestFleetOfflineDevices: devices that are offline when the desired state is
// published get it when they reconnect (from their session, or the retained
// message when multiplexed), and only then install.
func TestFleetOfflineDevices(t *testing.T) {
	ts := time.Date(2026, 11, 25, 11, 0, 0, 0, time.UTC)
	for _, b := range brokers {
		for _, lk := range links {
			t.Run(b.name+"/"+lk.name, func(t *testing.T) {
				url := b.start(t)
				skipMux(t, url, lk.conns)
				col := collect(t, url)
				ro := newRollout(t, url)
				f, err := NewFleet(FleetConfig{
					Broker: url, PasswordSecret: secretFor(url), Mode: ModeFleet, Devices: 20, Connections: lk.conns, Wildcard: lk.wildcard, TimeScale: 100,
					DurationMean: 10 * time.Second, FailureRate: 0.2, Seed: 3,
				}, testLogger(t))
				if err != nil {
					t.Fatal(err)
				}
				runFleet(t, f)
				ids := f.DeviceIDs()
				away, here := ids[:5], ids[5:]
				for _, id := range away {
					if err := f.SetOffline(id); err != nil {
						t.Fatal(err)
					}
				}
				s := f.Stats()
				if s.Offline != 5 {
					t.Fatalf("%d offline, want 5", s.Offline)
				}
				if lk.conns == 0 && s.Connected != 15 {
					t.Fatalf("%d connected, want 15", s.Connected)
				}
				delta := deltaPayload(t, "4.2.0", "job-1", ts)
				for _, id := range ids {
					ro.send(t, DefaultType, id, delta)
				}
				waitFinished(t, f, here, 30*time.Second)
				for _, id := range away {
					if st, _ := f.Device(id); st.DeltaDeliveries != 0 || st.Installs != 0 {
						t.Errorf("offline %s: %d deliveries, %d installs", id, st.DeltaDeliveries, st.Installs)
					}
				}
				for _, id := range away {
					if err := f.SetOnline(id); err != nil {
						t.Fatal(err)
					}
				}
				waitFinished(t, f, ids, 30*time.Second)
				col.wait(t, 40)
				checkInstalledOnce(t, f, col, ids, "4.2.0")
				for _, id := range away {
					st, _ := f.Device(id)
					if st.DeltasReceived != 1 || st.Reconnects != 1 || !st.Online {
						t.Errorf("%s: received %d, reconnects %d, online %v; want 1, 1, true", id, st.DeltasReceived, st.Reconnects, st.Online)
					}
				}
				if s := f.Stats(); s.Offline != 0 || s.OfflineEvents != 5 || s.Reconnects != 5 {
					t.Errorf("stats: offline %d, outages %d, reconnects %d", s.Offline, s.OfflineEvents, s.Reconnects)
				}
			})
		}
	}
}

// TestFleetScheduledOutages: the configured share of the fleet disconnects
// on its own and comes back.
func TestFleetScheduledOutages(t *testing.T) {
	js := testutil.StartJetStream(t, testutil.JetStreamOptions{MQTT: true, NoStreams: true})
	url := "tcp://" + js.Server.MQTTAddr()
	f, err := NewFleet(FleetConfig{
		Broker: url, Mode: ModeFleet, Devices: 20, OfflineShare: 0.25,
		OfflineWithin: time.Millisecond, OfflineFor: time.Second, Seed: 3,
	}, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	runFleet(t, f)
	testutil.Eventually(t, 10*time.Second, func() bool { return f.Stats().OfflineEvents == 5 }, "outages: %s", f.Stats())
	testutil.Eventually(t, 20*time.Second, func() bool {
		s := f.Stats()
		return s.Offline == 0 && s.Reconnects == 5 && s.Connected == 20
	}, "devices not back: %s", f.Stats())
	var back []string
	for _, id := range f.DeviceIDs() {
		if st, _ := f.Device(id); st.Reconnects > 0 {
			back = append(back, id)
		}
	}
	sort.Strings(back)
	if len(back) != 5 {
		t.Errorf("devices that reconnected: %v, want 5", back)
	}
}

// TestReportRetryAcrossBrokerRestart: the broker goes away while devices
// install; their final reports fail, are retried on the backoff schedule,
// and arrive once the broker is back: no update is lost or given up.
func TestReportRetryAcrossBrokerRestart(t *testing.T) {
	mosq := testutil.StartMosquitto(t)
	url := mosq.URL
	col := collect(t, url)
	ro := newRollout(t, url)
	f, err := NewFleet(FleetConfig{
		Broker: url, Mode: ModeFleet, Devices: 10, TimeScale: 2,
		DurationMean: 4 * time.Second, DurationStddev: time.Second, FailureRate: 0.2, Seed: 5,
	}, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	runFleet(t, f)
	ids := f.DeviceIDs()
	delta := deltaPayload(t, "4.2.0", "job-1", time.Date(2026, 11, 25, 11, 0, 0, 0, time.UTC))
	for _, id := range ids {
		ro.send(t, DefaultType, id, delta)
	}
	testutil.Eventually(t, 10*time.Second, func() bool { return f.Stats().SentProgress == 10 }, "in_progress not acknowledged: %s", f.Stats())
	// Installs take ~2 s; the broker is down for the first of them to end.
	mosq.Stop(t)
	testutil.Eventually(t, 20*time.Second, func() bool { return f.Stats().PublishErrors > 0 }, "no publish failed while the broker was down: %s", f.Stats())
	mosq.Restart(t)
	waitFinished(t, f, ids, 60*time.Second)
	s := f.Stats()
	if s.Retries == 0 || s.LocalFailures != 0 || s.Completed+s.Failed != 10 {
		t.Errorf("want retries, no local failures, 10 outcomes: %s", s)
	}
	testutil.Eventually(t, 20*time.Second, func() bool {
		byDev := col.byDevice(t)
		for _, id := range ids {
			if fws := byDev[id]; len(fws) == 0 || fws[len(fws)-1].Status == statusInProgress {
				return false
			}
		}
		return true
	}, "final reports did not all arrive: %v", col.byDevice(t))
}

// TestSubscriptionLimit: the NATS MQTT listener refuses a session's 64th
// QoS 1 subscription in the SUBACK; a multiplexed fleet that needs more
// fails with an error that says what to do instead of silently missing
// desired states, and the same fleet under wildcard subscriptions works.
func TestSubscriptionLimit(t *testing.T) {
	url := brokers[0].start(t)
	tests := []struct {
		name     string
		wildcard bool
		wantErr  bool
	}{
		{"a subscription per device", false, true},
		{"wildcard", true, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, err := NewFleet(FleetConfig{
				Broker: url, Mode: ModeFleet, Devices: 70, Connections: 1, Wildcard: tt.wildcard,
				ClientIDPrefix: fmt.Sprintf("limit%v", tt.wildcard),
			}, testLogger(t))
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			done := make(chan error, 1)
			go func() { done <- f.Run(ctx) }()
			select {
			case err := <-done:
				if !tt.wantErr {
					t.Fatalf("run ended: %v", err)
				}
				if err == nil || !strings.Contains(err.Error(), "refused") || !strings.Contains(err.Error(), "wildcard") {
					t.Fatalf("run error %v, want a refusal that suggests wildcard subscriptions", err)
				}
			case <-f.Ready():
				if tt.wantErr {
					t.Fatal("fleet became ready with subscriptions the broker refused")
				}
				cancel()
				if err := <-done; err != nil {
					t.Fatal(err)
				}
			}
		})
	}
}
