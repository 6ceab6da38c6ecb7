package bridge

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"sync"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/otawatch/otawatch/events"
	"github.com/otawatch/otawatch/services/internal/svc"
	"github.com/otawatch/otawatch/services/internal/testutil"
)

// env is one test's real parts: an embedded JetStream and an MQTT broker.
type env struct {
	js      *testutil.JetStream
	mqttURL string
	mosq    *testutil.Mosquitto // nil when the broker is the NATS MQTT listener
	// clock is the bridges' svc.Deps.Clock (nil: the wall clock).
	clock svc.Clock
}

// brokerKind starts one of the two brokers the bridge is tested against.
type brokerKind struct {
	name  string
	start func(t *testing.T) *env
}

var brokerKinds = []brokerKind{
	{"mosquitto", func(t *testing.T) *env {
		js := testutil.StartJetStream(t, testutil.JetStreamOptions{})
		m := testutil.StartMosquitto(t)
		return &env{js: js, mqttURL: m.URL, mosq: m}
	}},
	{"nats-mqtt", func(t *testing.T) *env {
		js := testutil.StartJetStream(t, testutil.JetStreamOptions{MQTT: true})
		return &env{js: js, mqttURL: "tcp://" + js.Server.MQTTAddr()}
	}},
}

// logBuf collects a test's logs and prints them only if the test failed:
// paho calls handlers in goroutines that may outlive the test, where
// t.Log would panic.
type logBuf struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *logBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

func testLogger(t *testing.T) *slog.Logger {
	lb := &logBuf{}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("bridge log:\n%s", lb.String())
		}
	})
	return slog.New(slog.NewTextHandler(lb, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// running is a bridge started by a test.
type running struct {
	s      *Service
	health *svc.Health
	cancel context.CancelFunc
	done   chan error
	once   sync.Once
}

// startBridge starts a bridge on e with cfg (broker, client id and short
// reconnect filled in) and waits until it is subscribed.
func (e *env) startBridge(t *testing.T, cfg Config, h hooks) *running {
	t.Helper()
	r := e.launchBridge(t, cfg, h)
	testutil.Eventually(t, 20*time.Second, r.ready, "bridge not ready: %v", r.health.Status())
	return r
}

// launchBridge starts a bridge as startBridge does, without waiting.
func (e *env) launchBridge(t *testing.T, cfg Config, h hooks) *running {
	t.Helper()
	cfg.Broker = e.mqttURL
	if cfg.ClientID == "" {
		cfg.ClientID = "otawatch-bridge-test"
	}
	if cfg.MaxReconnectInterval == 0 {
		cfg.MaxReconnectInterval = 500 * time.Millisecond
	}
	health := svc.NewHealth()
	s, err := New(cfg, svc.Deps{Log: testLogger(t), NC: e.js.NC, JS: e.js.JS, Health: health, Clock: e.clock})
	if err != nil {
		t.Fatalf("new bridge: %v", err)
	}
	s.hooks = h
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{s: s, health: health, cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- s.Run(ctx) }()
	t.Cleanup(func() { r.stop(t) })
	return r
}

// ready reports whether the bridge is connected and subscribed.
func (r *running) ready() bool {
	for _, st := range r.health.Status() {
		if st.Name == HealthComponent {
			return st.Err == nil
		}
	}
	return false
}

// stop cancels the bridge and checks that Run returns nil.
func (r *running) stop(t *testing.T) {
	t.Helper()
	r.once.Do(func() {
		r.cancel()
		select {
		case err := <-r.done:
			if err != nil {
				t.Errorf("bridge Run returned %v, want nil", err)
			}
		case <-time.After(30 * time.Second):
			t.Errorf("bridge Run did not return 30s after its context ended")
		}
	})
}

// publisher connects a device-side MQTT client.
func (e *env) publisher(t testing.TB, id string) mqtt.Client {
	t.Helper()
	return e.tlsPublisher(t, id, nil)
}

// tlsPublisher connects a device-side MQTT client with a TLS config (nil:
// the URL's defaults).
func (e *env) tlsPublisher(t testing.TB, id string, tc *tls.Config) mqtt.Client {
	t.Helper()
	opts := mqtt.NewClientOptions().AddBroker(e.mqttURL).SetClientID(id).SetCleanSession(true).
		SetAutoReconnect(false).SetConnectTimeout(5 * time.Second).SetTLSConfig(tc)
	c := mqtt.NewClient(opts)
	tok := c.Connect()
	if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("publisher %s connect to %s: %v", id, e.mqttURL, tok.Error())
	}
	t.Cleanup(func() { c.Disconnect(100) })
	return c
}

// msg is one MQTT message a test publishes.
type msg struct {
	topic   string
	payload []byte
}

// publishAll publishes msgs at QoS 1 without waiting between them, then
// waits for every PUBACK.
func publishAll(t testing.TB, c mqtt.Client, msgs []msg) {
	t.Helper()
	toks := make([]mqtt.Token, len(msgs))
	for i, m := range msgs {
		toks[i] = c.Publish(m.topic, 1, false, m.payload)
	}
	for i, tok := range toks {
		if !tok.WaitTimeout(30 * time.Second) {
			t.Fatalf("publish %d (%s): no PUBACK after 30s", i, msgs[i].topic)
		}
		if err := tok.Error(); err != nil {
			t.Fatalf("publish %d (%s): %v", i, msgs[i].topic, err)
		}
	}
}

// report is the i-th report of a test fleet: devices, statuses, durations
// and timestamps all differ, so every report has its own identity.
func report(i int) (events.ShadowReportedData, msg) {
	statuses := []string{events.StatusInProgress, events.StatusCompleted, events.StatusFailed}
	fw := events.Firmware{
		Version:         fmt.Sprintf("4.%d.%d", i%7, i%13),
		Timestamp:       time.Date(2025, 7, 22, 11, 30, 0, 0, time.UTC).Add(time.Duration(i) * 1500 * time.Millisecond),
		Status:          statuses[i%3],
		Checksum:        fmt.Sprintf("sha256:%064x", i*7919),
		PreviousVersion: "4.1.5",
	}
	if fw.Status != events.StatusInProgress {
		fw.UpdateDuration = float64(60+i%600) + 0.25
	}
	if fw.Status == events.StatusFailed {
		code := fmt.Sprintf("E_%d", i%5)
		fw.ErrorCode = &code
	}
	typeID, deviceID := "gateway", fmt.Sprintf("dev-%05d", i)
	topic := events.ReportTopic(typeID, deviceID)
	return events.ShadowReportedData{TypeID: typeID, DeviceID: deviceID, Topic: topic, Firmware: fw},
		msg{topic: topic, payload: reportPayload(fw)}
}

// storedEvent is one event read back from a stream.
type storedEvent struct {
	raw jetstream.RawStreamMsg
	ev  events.Event
}

// readEvents reads and decodes every event of stream, checking the
// envelope and that the Nats-Msg-Id is the event id.
func readEvents(t *testing.T, e *env, stream string) []storedEvent {
	t.Helper()
	var out []storedEvent
	for _, m := range e.js.Events(t, stream) {
		ev, err := events.Decode(m.Data)
		if err != nil {
			t.Fatalf("%s seq %d: %v", stream, m.Sequence, err)
		}
		if got := m.Header.Get(jetstream.MsgIDHeader); got != ev.ID {
			t.Errorf("%s seq %d: Nats-Msg-Id %q, event id %q", stream, m.Sequence, got, ev.ID)
		}
		if ev.Source != events.SourceBridge || ev.Subject != m.Subject {
			t.Errorf("%s seq %d: source %q subject %q on subject %q", stream, m.Sequence, ev.Source, ev.Subject, m.Subject)
		}
		out = append(out, storedEvent{raw: m, ev: ev})
	}
	return out
}

// settle waits until the bridge has handled want messages and holds none.
func (r *running) settle(t *testing.T, want uint64) {
	t.Helper()
	testutil.Eventually(t, 60*time.Second, func() bool {
		st := r.s.Stats()
		return st.Accepted+st.Duplicates+st.Rejected >= want && st.InFlight == 0
	}, "bridge handled fewer than %d messages: %+v", want, r.s.Stats())
}
