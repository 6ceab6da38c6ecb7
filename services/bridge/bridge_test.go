package bridge

import (
	"context"
	"errors"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/otawatch/otawatch/events"
	"github.com/otawatch/otawatch/services/internal/svc"
	"github.com/otawatch/otawatch/services/internal/testutil"
)

// TestReportsBecomeEvents: N reports published -> exactly N SHADOW events
// whose data equals the reports.
func TestReportsBecomeEvents(t *testing.T) {
	const n = 1500
	for _, bk := range brokerKinds {
		t.Run(bk.name, func(t *testing.T) {
			e := bk.start(t)
			b := e.startBridge(t, Config{MaxInFlight: 64}, hooks{})
			want := map[string]events.ShadowReportedData{}
			msgs := make([]msg, n)
			for i := range n {
				d, m := report(i)
				want[events.ReportEventID(d.TypeID, d.DeviceID, d.Firmware)] = d
				msgs[i] = m
			}
			publishAll(t, e.publisher(t, "fleet"), msgs)
			b.settle(t, n)

			got := readEvents(t, e, events.StreamShadow)
			if len(got) != n {
				t.Fatalf("SHADOW holds %d events, want %d (stats %+v)", len(got), n, b.s.Stats())
			}
			seen := map[string]bool{}
			for _, se := range got {
				if se.ev.Type != events.TypeShadowReported {
					t.Fatalf("seq %d: type %q", se.raw.Sequence, se.ev.Type)
				}
				var d events.ShadowReportedData
				if err := se.ev.DecodeData(&d); err != nil {
					t.Fatal(err)
				}
				w, ok := want[se.ev.ID]
				if !ok || seen[se.ev.ID] {
					t.Fatalf("seq %d: event %s is unknown or stored twice", se.raw.Sequence, se.ev.ID)
				}
				seen[se.ev.ID] = true
				if d.TypeID != w.TypeID || d.DeviceID != w.DeviceID || d.Topic != w.Topic || !sameFirmware(d.Firmware, w.Firmware) {
					t.Fatalf("seq %d data\n got: %s\nwant: %s", se.raw.Sequence, mustJSON(d), mustJSON(w))
				}
				if se.raw.Subject != events.ShadowReportedSubject(w.TypeID, w.DeviceID) {
					t.Fatalf("seq %d: subject %q", se.raw.Sequence, se.raw.Subject)
				}
			}
			if st := b.s.Stats(); st.Accepted != n || st.Rejected != 0 {
				t.Errorf("stats %+v, want %d accepted, none rejected", st, n)
			}
			if c := e.js.Count(t, events.StreamRejected); c != 0 {
				t.Errorf("REJECTED holds %d events, want 0", c)
			}
		})
	}
}

// TestDeviceRetryStoredOnce: the same report published twice (a device
// retry, once from a reconnected device client) is one event; so is the
// same refused report twice.
func TestDeviceRetryStoredOnce(t *testing.T) {
	for _, bk := range brokerKinds {
		t.Run(bk.name, func(t *testing.T) {
			e := bk.start(t)
			b := e.startBridge(t, Config{}, hooks{})
			_, good := report(1)
			bad := msg{topic: good.topic, payload: []byte(`{"state":{"reported":{"firmware":{"status":"done"}}}}`)}
			publishAll(t, e.publisher(t, "device-1"), []msg{good, bad})
			publishAll(t, e.publisher(t, "device-1-again"), []msg{good, bad})
			b.settle(t, 4)
			if c := e.js.Count(t, events.StreamShadow); c != 1 {
				t.Errorf("SHADOW holds %d events, want 1", c)
			}
			if c := e.js.Count(t, events.StreamRejected); c != 1 {
				t.Errorf("REJECTED holds %d events, want 1", c)
			}
			if st := b.s.Stats(); st.Accepted != 1 || st.Duplicates != 1 || st.Rejected != 2 {
				t.Errorf("stats %+v, want 1 accepted, 1 duplicate, 2 rejected", st)
			}
		})
	}
}

// TestCrashWithReportsInFlight: the bridge dies (connection cut, no more
// acks) with reports in flight and more arrive while it is away; a new
// bridge with the same client id stores every report, none twice.
//
// Mosquitto resends the unacknowledged reports as soon as the session is
// resumed. The NATS MQTT listener resends them only after its ack wait (30 s
// by default), so that case takes about 30 s.
func TestCrashWithReportsInFlight(t *testing.T) {
	const (
		first     = 800 // published around the crash
		whileDown = 200 // published while no bridge runs
		crashAt   = 100 // acks before the crash
	)
	for _, bk := range brokerKinds {
		t.Run(bk.name, func(t *testing.T) {
			e := bk.start(t)
			cfg := Config{ClientID: "otawatch-bridge-crash", MaxInFlight: 32}

			var (
				mu      sync.Mutex
				conns   []net.Conn
				acks    atomic.Int64
				crashed atomic.Bool
				crash   = make(chan struct{})
			)
			h := hooks{
				openConn: func(c net.Conn) net.Conn {
					mu.Lock()
					defer mu.Unlock()
					conns = append(conns, c)
					return c
				},
				beforeAck: func(mqtt.Message) bool {
					if crashed.Load() {
						return false
					}
					if acks.Add(1) == crashAt {
						crashed.Store(true)
						close(crash)
						return false
					}
					return true
				},
			}
			a := e.startBridge(t, cfg, h)
			fleet := e.publisher(t, "fleet")
			msgs := make([]msg, first+whileDown)
			for i := range msgs {
				_, msgs[i] = report(i)
			}
			pubDone := make(chan struct{})
			go func() {
				defer close(pubDone)
				publishAll(t, fleet, msgs[:first])
			}()
			select {
			case <-crash:
			case <-time.After(60 * time.Second):
				t.Fatalf("no crash after 60s: %+v", a.s.Stats())
			}
			// The crash: cut the TCP connection under paho, then stop.
			mu.Lock()
			for _, c := range conns {
				c.Close()
			}
			mu.Unlock()
			a.stop(t)
			<-pubDone
			stored := e.js.Count(t, events.StreamShadow)
			t.Logf("crashed after %d acks; %d of %d reports stored, bridge stats %+v", crashAt, stored, first, a.s.Stats())
			if stored >= first {
				t.Fatalf("all %d reports were stored before the crash: the test did not crash with reports in flight", first)
			}

			publishAll(t, e.publisher(t, "fleet-2"), msgs[first:])

			b := e.startBridge(t, cfg, hooks{})
			total := uint64(first + whileDown)
			testutil.Eventually(t, 90*time.Second, func() bool { return e.js.Count(t, events.StreamShadow) >= total },
				"SHADOW holds %d events, want %d (stats %+v)", e.js.Count(t, events.StreamShadow), total, b.s.Stats())
			// The reports stored but not acknowledged before the crash come
			// back from the broker (the NATS listener after its ack wait)
			// and are stored again as duplicates, not as new events.
			testutil.Eventually(t, 90*time.Second, func() bool { return b.s.Stats().Duplicates > 0 },
				"no report was redelivered after the crash: the stored-but-unacknowledged path was not exercised (stats %+v)", b.s.Stats())
			b.settle(t, total-stored)
			got := readEvents(t, e, events.StreamShadow)
			ids := map[string]bool{}
			for _, se := range got {
				ids[se.ev.ID] = true
			}
			if uint64(len(got)) != total || uint64(len(ids)) != total {
				t.Fatalf("SHADOW holds %d events with %d ids, want %d", len(got), len(ids), total)
			}
			t.Logf("restarted bridge stats %+v", b.s.Stats())
		})
	}
}

// badInput is one refused message and the reason it must carry.
type badInput struct {
	name   string
	topic  string
	body   []byte
	reason string
	// notViaNATS says why the input is not sent through the NATS MQTT
	// listener; empty means it is.
	notViaNATS string
}

// Why some inputs cannot be tested through the NATS MQTT listener
// (nats-server v2.15.2).
const (
	// natsDrops: the listener drops the publisher's connection on a space
	// in a topic. The test checks that it does.
	natsDrops = "drops the publishing connection"
	// natsWildcard: the listener passes a ">" level through as a NATS
	// wildcard token and PUBACKs it, but delivers it unreliably: in about
	// 1 run of 3 of this test it had not reached the subscriber after a
	// minute, and other messages of the run arrived late. The bridge's
	// refusal of ">" is shown through Mosquitto and by the decoder tests.
	natsWildcard = "passes > through as a wildcard and does not reliably deliver it"
)

func badInputs(t *testing.T, maxPayload int) []badInput {
	t.Helper()
	_, good := report(7)
	topic := good.topic
	var list []badInput
	for name, body := range readCorpus(t, "bad-") {
		list = append(list, badInput{name: name, topic: topic, body: body, reason: badPayloadReasons[name]})
	}
	big := append([]byte(`{"pad":"`+strings.Repeat("x", maxPayload)+`",`), good.payload[1:]...)
	idTopic := func(id string) string { return "iot-2/type/gateway/id/" + id + "/update/shadow" }
	list = append(list,
		badInput{"oversized", topic, big, "payload is " + itoa(len(big)) + " bytes, the limit is " + itoa(maxPayload), ""},
		badInput{"star in id", idTopic("dev*1"), good.payload, `topic: device id "dev*1" has '*' at byte 3; allowed are A-Z a-z 0-9 _ -`, ""},
		badInput{"gt as id", idTopic(">"), good.payload, `topic: device id ">" has '>' at byte 0; allowed are A-Z a-z 0-9 _ -`, natsWildcard},
		badInput{"space in id", idTopic("dev 1"), good.payload, `topic: device id "dev 1" has a space at byte 3; allowed are A-Z a-z 0-9 _ -`, natsDrops},
		badInput{"dot in id", idTopic("dev.1"), good.payload, `topic: device id "dev.1" has '.' at byte 3; allowed are A-Z a-z 0-9 _ -`, ""},
		badInput{"empty id", idTopic(""), good.payload, "topic: device id is empty", ""},
		badInput{"id too long", idTopic(strings.Repeat("d", 65)), good.payload, "topic: device id is 65 bytes long, the limit is 64", ""},
		badInput{"topic not a report", "iot-2/type/gateway/id/dev-1/update/status", good.payload,
			`topic "iot-2/type/gateway/id/dev-1/update/status" is not iot-2/type/{typeId}/id/{deviceId}/update/shadow`, ""},
	)
	return list
}

func itoa(n int) string { return strconv.Itoa(n) }

// TestBadInputRejected: every bad input lands on REJECTED with its reason,
// topic and raw bytes; nothing lands on SHADOW; the bridge carries on.
//
// The bridge subscribes here with iot-2/type/+/id/+/update/+ rather than the
// default filter, so that a topic which is not a report topic reaches it
// (the default filter would keep it away at the broker). Two inputs go
// only through Mosquitto; notViaNATS says why.
func TestBadInputRejected(t *testing.T) {
	const maxPayload = 1024
	for _, bk := range brokerKinds {
		t.Run(bk.name, func(t *testing.T) {
			e := bk.start(t)
			b := e.startBridge(t, Config{Topic: "iot-2/type/+/id/+/update/+", MaxPayload: maxPayload}, hooks{})
			var cases []badInput
			for i, c := range badInputs(t, maxPayload) {
				// One client per input: a broker may drop a client over one.
				p := e.publisher(t, "bad-"+itoa(i))
				if e.mosq == nil && c.notViaNATS != "" {
					t.Logf("%s: not sent through NATS MQTT: it %s", c.name, c.notViaNATS)
					if c.notViaNATS == natsDrops {
						// Check the claim that keeps this input out.
						tok := p.Publish(c.topic, 1, false, c.body)
						if tok.WaitTimeout(10*time.Second) && tok.Error() == nil && p.IsConnected() {
							t.Errorf("%s: the NATS MQTT listener took %q; test it here", c.name, c.topic)
						}
					}
					continue
				}
				publishAll(t, p, []msg{{c.topic, c.body}})
				cases = append(cases, c)
			}
			b.settle(t, uint64(len(cases)))

			got := readEvents(t, e, events.StreamRejected)
			byKey := map[string]events.RejectedData{}
			for _, se := range got {
				if se.ev.Type != events.TypeRejected || se.raw.Subject != events.RejectedSubject("bridge") {
					t.Errorf("seq %d: type %q subject %q", se.raw.Sequence, se.ev.Type, se.raw.Subject)
				}
				var d events.RejectedData
				if err := se.ev.DecodeData(&d); err != nil {
					t.Fatal(err)
				}
				if d.Source != "bridge" {
					t.Errorf("seq %d: source %q", se.raw.Sequence, d.Source)
				}
				if want := events.IdentityID("rj", d.Topic, string(d.Raw)); se.ev.ID != want {
					t.Errorf("seq %d: id %q, want %q", se.raw.Sequence, se.ev.ID, want)
				}
				byKey[d.Topic+"\x00"+string(d.Raw)] = d
			}
			for _, c := range cases {
				d, ok := byKey[c.topic+"\x00"+string(c.body)]
				if !ok {
					t.Errorf("%s: not on REJECTED", c.name)
					continue
				}
				if d.Reason != c.reason {
					t.Errorf("%s: reason\n got: %s\nwant: %s", c.name, d.Reason, c.reason)
				}
			}
			if len(got) != len(cases) {
				t.Errorf("REJECTED holds %d events, want %d", len(got), len(cases))
			}
			if c := e.js.Count(t, events.StreamShadow); c != 0 {
				t.Fatalf("SHADOW holds %d events after bad input only", c)
			}

			// Still up: a good report lands.
			_, good := report(8)
			publishAll(t, e.publisher(t, "good"), []msg{good})
			testutil.Eventually(t, 20*time.Second, func() bool { return e.js.Count(t, events.StreamShadow) == 1 },
				"the good report after bad input did not land: %+v", b.s.Stats())
		})
	}
}

// TestReconnect: the broker goes away and comes back; the bridge is not
// ready meanwhile, reconnects by itself and carries on.
func TestReconnect(t *testing.T) {
	e := brokerKinds[0].start(t) // Mosquitto: the test restarts it
	b := e.startBridge(t, Config{}, hooks{})
	e.mosq.Stop(t)
	testutil.Eventually(t, 20*time.Second, func() bool { return !b.ready() }, "bridge still ready with the broker down")
	e.mosq.Restart(t)
	testutil.Eventually(t, 30*time.Second, b.ready, "bridge did not reconnect: %v", b.health.Status())
	_, m := report(3)
	publishAll(t, e.publisher(t, "after-restart"), []msg{m})
	testutil.Eventually(t, 20*time.Second, func() bool { return e.js.Count(t, events.StreamShadow) == 1 },
		"report after reconnect did not land: %+v", b.s.Stats())
}

// TestBrokerDownAtStart: with no broker yet the bridge is not ready, says
// why, and connects once the broker is there.
func TestBrokerDownAtStart(t *testing.T) {
	e := brokerKinds[0].start(t)
	e.mosq.Stop(t)
	health := svc.NewHealth()
	s, err := New(Config{Broker: e.mqttURL, ClientID: "late", MaxReconnectInterval: 500 * time.Millisecond},
		svc.Deps{Log: testLogger(t), NC: e.js.NC, Health: health})
	if err != nil {
		t.Fatal(err)
	}
	r := &running{s: s, health: health, done: make(chan error, 1)}
	ctx, cancel := context.WithCancel(context.Background())
	r.cancel = cancel
	go func() { r.done <- s.Run(ctx) }()
	t.Cleanup(func() { r.stop(t) })
	testutil.Eventually(t, 10*time.Second, func() bool {
		st := health.Status()
		return len(st) == 1 && st[0].Err != nil && strings.Contains(st[0].Err.Error(), "mqtt connect")
	}, "health does not say the connect failed: %v", health.Status())
	e.mosq.Restart(t)
	testutil.Eventually(t, 30*time.Second, r.ready, "bridge did not connect once the broker came: %v", health.Status())
}

// TestPasswordFileUnreadable: a password_file that cannot be read stops Run
// with an error naming it.
func TestPasswordFileUnreadable(t *testing.T) {
	js := testutil.StartJetStream(t, testutil.JetStreamOptions{})
	s, err := New(Config{PasswordFile: t.TempDir() + "/missing"}, svc.Deps{NC: js.NC})
	if err != nil {
		t.Fatal(err)
	}
	err = s.Run(context.Background())
	if err == nil || !strings.Contains(err.Error(), "mqtt password") || !strings.Contains(err.Error(), "missing") {
		t.Fatalf("Run: %v, want an error about the password file", err)
	}
}

// TestStallWithEverySlotTaken: JetStream stops storing while reports keep
// coming, so every in-flight slot is taken and the rest queue; then the
// MQTT connection drops. The bridge notices and reconnects while JetStream
// is still stalled (paho is never blocked by a full pipeline), and once
// JetStream is back every report, queued, in flight or resent by the
// broker, is stored exactly once.
func TestStallWithEverySlotTaken(t *testing.T) {
	const n, slots = 200, 8
	e := brokerKinds[0].start(t) // Mosquitto: it resends at once on reconnect
	var (
		mu      sync.Mutex
		conns   []*droppable
		stalled atomic.Bool
	)
	stalled.Store(true)
	h := hooks{
		openConn: func(c net.Conn) net.Conn {
			mu.Lock()
			defer mu.Unlock()
			d := &droppable{Conn: c}
			conns = append(conns, d)
			return d
		},
		beforePublish: func() error {
			if stalled.Load() {
				return errors.New("test: jetstream stalled")
			}
			return nil
		},
	}
	b := e.startBridge(t, Config{MaxInFlight: slots, ClientID: "otawatch-bridge-stall"}, h)
	msgs := make([]msg, n)
	for i := range msgs {
		_, msgs[i] = report(i)
	}
	publishAll(t, e.publisher(t, "fleet"), msgs)
	testutil.Eventually(t, 20*time.Second, func() bool { return b.s.Stats().InFlight == n },
		"in flight %d, want all %d reports held (%d storing, the rest queued)", b.s.Stats().InFlight, n, slots)

	mu.Lock()
	for _, c := range conns {
		c.drop()
	}
	mu.Unlock()
	opened := func() int { mu.Lock(); defer mu.Unlock(); return len(conns) }
	testutil.Eventually(t, 20*time.Second, func() bool { return opened() > 1 },
		"bridge did not reconnect after its connection dropped, with JetStream stalled: %v", b.health.Status())
	if got := e.js.Count(t, events.StreamShadow); got != 0 {
		t.Fatalf("SHADOW holds %d events while JetStream was stalled", got)
	}

	stalled.Store(false)
	testutil.Eventually(t, 60*time.Second, func() bool { return e.js.Count(t, events.StreamShadow) == n },
		"SHADOW holds %d events, want %d (stats %+v)", e.js.Count(t, events.StreamShadow), n, b.s.Stats())
	testutil.Eventually(t, 30*time.Second, b.ready, "bridge did not reconnect: %v", b.health.Status())
	b.settle(t, n)
	ids := map[string]bool{}
	for _, se := range readEvents(t, e, events.StreamShadow) {
		ids[se.ev.ID] = true
	}
	if len(ids) != n {
		t.Fatalf("SHADOW holds %d distinct reports, want %d", len(ids), n)
	}
	if st := b.s.Stats(); st.PublishRetries == 0 {
		t.Errorf("stats %+v: no publish was retried, the stall did not happen", st)
	}
}

// droppable is a broker connection a test can drop as a broker or network
// would: reads after drop fail with io.ErrUnexpectedEOF. (Closing the
// connection alone looks to paho like its own disconnect, which it does
// not report.)
type droppable struct {
	net.Conn
	dropped atomic.Bool
}

func (c *droppable) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if err != nil && c.dropped.Load() {
		err = io.ErrUnexpectedEOF
	}
	return n, err
}

func (c *droppable) drop() {
	c.dropped.Store(true)
	c.Conn.Close()
}

// TestStandbyTakesOver: two bridges with one client id. One connects and
// bridges; the other stands by (not ready, no connection: two connections
// with one client id would take the session from each other in turn).
// When the active one stops, the standby takes over the session and
// bridges what follows; every report is stored once.
func TestStandbyTakesOver(t *testing.T) {
	const n = 300
	e := brokerKinds[0].start(t)
	cfg := Config{ClientID: "otawatch-bridge-ha", LeaseTTL: 2 * time.Second}
	var aConns, bConns atomic.Int64
	counting := func(c *atomic.Int64) hooks {
		return hooks{openConn: func(conn net.Conn) net.Conn { c.Add(1); return conn }}
	}
	a := e.startBridge(t, cfg, counting(&aConns))
	b := e.launchBridge(t, cfg, counting(&bConns))
	standby := func() bool {
		for _, st := range b.health.Status() {
			if st.Name == HealthComponent && st.Err != nil && strings.HasPrefix(st.Err.Error(), "standby") {
				return true
			}
		}
		return false
	}
	testutil.Eventually(t, 10*time.Second, standby, "second bridge not standing by: %v", b.health.Status())

	msgs := make([]msg, 2*n)
	for i := range msgs {
		_, msgs[i] = report(i)
	}
	publishAll(t, e.publisher(t, "fleet-1"), msgs[:n])
	a.settle(t, n)
	if st := b.s.Stats(); st.Accepted != 0 || bConns.Load() != 0 {
		t.Fatalf("the standby bridged %+v over %d connections", st, bConns.Load())
	}
	if got := aConns.Load(); got != 1 {
		t.Errorf("the active bridge opened %d connections, want 1 (no session tug-of-war)", got)
	}

	a.stop(t)
	testutil.Eventually(t, 20*time.Second, b.ready, "standby did not take over: %v", b.health.Status())
	publishAll(t, e.publisher(t, "fleet-2"), msgs[n:])
	b.settle(t, n)
	if got := e.js.Count(t, events.StreamShadow); got != 2*n {
		t.Fatalf("SHADOW holds %d events, want %d", got, 2*n)
	}
	if st := b.s.Stats(); st.Accepted != n {
		t.Errorf("the new active bridge stored %+v, want %d", st, n)
	}
}

// TestLeaseLostStepsDown: another holder takes the active bridge's lease
// (as after a partition); the bridge disconnects and stands by, and once
// that lease expires takes it back and bridges again.
func TestLeaseLostStepsDown(t *testing.T) {
	e := brokerKinds[0].start(t)
	cfg := Config{ClientID: "otawatch-bridge-steal", LeaseTTL: 2 * time.Second}
	var conns atomic.Int64
	a := e.startBridge(t, cfg, hooks{openConn: func(c net.Conn) net.Conn { conns.Add(1); return c }})

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	kv, err := e.js.JS.KeyValue(ctx, DefaultLeaseBucket)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Put(ctx, leaseKey(cfg.ClientID), []byte("intruder")); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 10*time.Second, func() bool { return !a.ready() }, "bridge still active after losing its lease")
	testutil.Eventually(t, 20*time.Second, a.ready, "bridge did not take its lease back: %v", a.health.Status())
	if got := conns.Load(); got != 2 {
		t.Errorf("bridge opened %d connections, want 2 (one per time it held the lease)", got)
	}
	_, m := report(1)
	publishAll(t, e.publisher(t, "after-steal"), []msg{m})
	a.settle(t, 1)
	if got := e.js.Count(t, events.StreamShadow); got != 1 {
		t.Fatalf("SHADOW holds %d events, want 1", got)
	}
}
