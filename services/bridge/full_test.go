package bridge

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/otawatch/otawatch/events"
	"github.com/otawatch/otawatch/services/internal/svc"
	"github.com/otawatch/otawatch/services/internal/testutil"
)

// startBridgeWith starts a bridge as startBridge does, with the stream
// settings the app would hand it.
func (e *env) startBridgeWith(t *testing.T, cfg Config, streams events.StreamOptions) *running {
	t.Helper()
	cfg.Broker = e.mqttURL
	cfg.ClientID = "otawatch-bridge-test"
	cfg.MaxReconnectInterval = 500 * time.Millisecond
	health := svc.NewHealth()
	s, err := New(cfg, svc.Deps{Log: testLogger(t), NC: e.js.NC, JS: e.js.JS, Streams: streams, Health: health})
	if err != nil {
		t.Fatalf("new bridge: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{s: s, health: health, cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- s.Run(ctx) }()
	t.Cleanup(func() { r.stop(t) })
	testutil.Eventually(t, 20*time.Second, r.ready, "bridge not ready: %v", health.Status())
	return r
}

// storeHealth is the bridge's StoreHealthComponent state: set, and its
// error text.
func (r *running) storeHealth() (set bool, why string) {
	for _, st := range r.health.Status() {
		if st.Name == StoreHealthComponent {
			if st.Err != nil {
				return true, st.Err.Error()
			}
			return true, ""
		}
	}
	return false, ""
}

func ensureStreams(t *testing.T, e *env, o events.StreamOptions) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := events.EnsureStreams(ctx, e.js.JS, o); err != nil {
		t.Fatalf("ensure streams: %v", err)
	}
}

// TestFullShadowHoldsReports: at SHADOW's byte limit the bridge stores
// nothing more and acknowledges nothing it did not store; it says why in
// the health registry (/readyz); a refused report still lands on
// REJECTED. Once the limit is raised, the held reports are stored and the
// bridge is ready again. Nothing accepted is lost.
func TestFullShadowHoldsReports(t *testing.T) {
	const limit, total = 8 << 10, 30
	for _, bk := range brokerKinds {
		t.Run(bk.name, func(t *testing.T) {
			e := bk.start(t)
			small := events.StreamOptions{Replicas: 1, StreamMaxBytes: map[string]int64{events.StreamShadow: limit}}
			ensureStreams(t, e, small)
			b := e.startBridgeWith(t, Config{}, small)

			msgs := make([]msg, total)
			for i := range msgs {
				_, msgs[i] = report(i)
			}
			publishAll(t, e.publisher(t, "fleet"), msgs)

			wantWhy := "SHADOW stream is full (maximum bytes exceeded, max_bytes 8192): reports are held at the broker"
			testutil.Eventually(t, 30*time.Second, func() bool {
				_, why := b.storeHealth()
				return why == wantWhy && b.s.Stats().Accepted+uint64(b.s.Stats().InFlight) == total
			}, "no full SHADOW in health: %v, %+v", b.health.Status(), b.s.Stats())
			if b.health.Ready() {
				t.Errorf("health ready with SHADOW full")
			}
			stored := e.js.Count(t, events.StreamShadow)
			st := b.s.Stats()
			if stored == 0 || stored >= total {
				t.Fatalf("SHADOW holds %d of %d reports with a %d-byte limit, want some and not all", stored, total, limit)
			}
			// Acknowledged exactly what was stored; the rest is held.
			if st.Accepted != stored || st.InFlight != int64(total-stored) {
				t.Errorf("accepted %d, in flight %d; want %d stored and acknowledged, %d held", st.Accepted, st.InFlight, stored, total-stored)
			}

			// REJECTED is not full: a refusal is still recorded and acked.
			bad := msg{topic: events.ReportTopic("gateway", "bad-1"), payload: []byte(`{"state":`)}
			publishAll(t, e.publisher(t, "bad"), []msg{bad})
			testutil.Eventually(t, 20*time.Second, func() bool { return b.s.Stats().Rejected == 1 },
				"refusal not recorded while SHADOW is full: %+v", b.s.Stats())
			if got := e.js.Count(t, events.StreamShadow); got != stored {
				t.Errorf("SHADOW went from %d to %d events while full", stored, got)
			}

			ensureStreams(t, e, events.StreamOptions{Replicas: 1, StreamMaxBytes: map[string]int64{events.StreamShadow: 1 << 20}})
			b.settle(t, total+1)
			if set, why := b.storeHealth(); !set || why != "" || !b.health.Ready() {
				t.Errorf("after the limit was raised: store health %q, ready %v, want ready", why, b.health.Ready())
			}
			got := readEvents(t, e, events.StreamShadow)
			seen := map[string]bool{}
			for _, se := range got {
				seen[se.ev.ID] = true
			}
			for i := range total {
				d, _ := report(i)
				if id := events.ReportEventID(d.TypeID, d.DeviceID, d.Firmware); !seen[id] {
					t.Errorf("report %d (%s) lost", i, d.DeviceID)
				}
			}
			if len(got) != total || got[0].raw.Sequence != 1 {
				t.Errorf("SHADOW holds %d events from seq %d, want %d from 1", len(got), got[0].raw.Sequence, total)
			}
		})
	}
}

// TestOversizedPayloadBounded: a payload over the broker's packet limit is
// refused by the broker (Mosquitto drops the client, the bridge never sees
// it); one under it but over mqtt.max_payload lands on REJECTED with its
// length and SHA-256 and at most events.MaxRejectedRaw of its bytes. On the
// NATS MQTT listener, whose limit is higher, a large payload is cut.
func TestOversizedPayloadBounded(t *testing.T) {
	topic := events.ReportTopic("gateway", "big-1")
	for _, bk := range brokerKinds {
		t.Run(bk.name, func(t *testing.T) {
			e := bk.start(t)
			b := e.startBridge(t, Config{}, hooks{})
			var sizes []int
			if e.mosq != nil {
				packet := confInt(t, testutil.MosquittoConfig, "max_packet_size")
				// Over the limit by one byte of payload: the broker drops
				// the client and stores nothing.
				p := e.publisher(t, "too-big")
				tok := p.Publish(topic, 1, false, make([]byte, packet))
				if tok.WaitTimeout(10*time.Second) && tok.Error() == nil && p.IsConnected() {
					t.Errorf("Mosquitto took a %d-byte payload with max_packet_size %d", packet, packet)
				}
				// The largest payload of a report topic the broker takes.
				sizes = []int{DefaultMaxPayload + 1, packet - len(topic) - 64}
			} else {
				sizes = []int{DefaultMaxPayload + 1, 200 << 10} // under the listener's max_payload
			}
			for i, n := range sizes {
				publishAll(t, e.publisher(t, "big-"+itoa(i)), []msg{{topic, bigPayload(n, i)}})
			}
			b.settle(t, uint64(len(sizes)))
			if st := b.s.Stats(); st.Rejected != uint64(len(sizes)) || st.Accepted != 0 {
				t.Errorf("stats %+v, want %d rejected", st, len(sizes))
			}
			got := readEvents(t, e, events.StreamRejected)
			if len(got) != len(sizes) {
				t.Fatalf("REJECTED holds %d events, want %d", len(got), len(sizes))
			}
			bySize := map[int64]events.RejectedData{}
			for _, se := range got {
				var d events.RejectedData
				if err := se.ev.DecodeData(&d); err != nil {
					t.Fatal(err)
				}
				if len(se.raw.Data) > int(events.MaxRejectedEventSize) {
					t.Errorf("seq %d: REJECTED event is %d bytes", se.raw.Sequence, len(se.raw.Data))
				}
				bySize[d.Size] = d
			}
			for i, n := range sizes {
				d, ok := bySize[int64(n)]
				if !ok {
					t.Errorf("payload %d: no REJECTED record of size %d", i, n)
					continue
				}
				full := bigPayload(n, i)
				sum := sha256.Sum256(full)
				wantRaw := min(len(full), events.MaxRejectedRaw)
				if d.Size != int64(len(full)) || d.SHA256 != hex.EncodeToString(sum[:]) {
					t.Errorf("payload %d: size %d sha256 %s, want %d %x", i, d.Size, d.SHA256, len(full), sum)
				}
				if len(d.Raw) != wantRaw || d.Truncated != (wantRaw < len(full)) || string(d.Raw) != string(full[:wantRaw]) {
					t.Errorf("payload %d: raw %d bytes, truncated %v; want the first %d", i, len(d.Raw), d.Truncated, wantRaw)
				}
				if !strings.HasPrefix(d.Reason, "payload is "+itoa(len(full))+" bytes") {
					t.Errorf("payload %d: reason %q", i, d.Reason)
				}
			}
		})
	}
}

// bigPayload is n bytes, different for each i.
func bigPayload(n, i int) []byte {
	b := []byte(strings.Repeat(string(rune('a'+i)), n))
	copy(b, `{"state":`)
	return b
}

// confInt reads an integer "key value" line of a Mosquitto configuration.
func confInt(t testing.TB, text, key string) int {
	t.Helper()
	v := confValues(text)[key]
	n := 0
	for _, c := range v {
		if c < '0' || c > '9' {
			t.Fatalf("%s %q is not a number", key, v)
		}
		n = n*10 + int(c-'0')
	}
	return n
}

// TestBrokerPacketLimitMatchesMaxPayload: the shipped Mosquitto takes
// every report the bridge accepts (max_payload plus the longest report
// topic and MQTT's header) and little more.
func TestBrokerPacketLimitMatchesMaxPayload(t *testing.T) {
	b, err := os.ReadFile("../../deploy/mosquitto/mosquitto.conf")
	if err != nil {
		t.Fatal(err)
	}
	packet := confInt(t, string(b), "max_packet_size")
	longest := events.ReportTopic(strings.Repeat("t", events.MaxIDLen), strings.Repeat("d", events.MaxIDLen))
	// Fixed header (1 + up to 4 bytes of length), topic length, packet id.
	need := DefaultMaxPayload + len(longest) + 1 + 4 + 2 + 2
	if packet < need || packet > DefaultMaxPayload+4096 {
		t.Errorf("max_packet_size %d: want between %d (max_payload %d and a report's headers) and %d (max_payload + 4 KiB)",
			packet, need, DefaultMaxPayload, DefaultMaxPayload+4096)
	}
}

// BenchmarkRejectedGrowth replays the attack that found the unbounded
// REJECTED (20 oversized payloads from one anonymous client) with the
// largest payload each broker takes, and reports how much REJECTED grew.
func BenchmarkRejectedGrowth(b *testing.B) {
	const n = 20
	for _, bk := range brokerKinds {
		b.Run(bk.name, func(b *testing.B) {
			js := testutil.StartJetStream(b, testutil.JetStreamOptions{MQTT: bk.name == "nats-mqtt"})
			e := &env{js: js, mqttURL: "tcp://" + js.Server.MQTTAddr()}
			size := int(js.NC.MaxPayload()) - 1024 // the NATS listener's limit, less the topic and headers
			if bk.name == "mosquitto" {
				m := testutil.StartMosquitto(b)
				e.mqttURL, e.mosq = m.URL, m
				size = confInt(b, testutil.MosquittoConfig, "max_packet_size") - 256
			}
			health := svc.NewHealth()
			s, err := New(Config{Broker: e.mqttURL, ClientID: "bench-bridge"}, svc.Deps{NC: js.NC, JS: js.JS, Health: health})
			if err != nil {
				b.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() { done <- s.Run(ctx) }()
			defer func() { cancel(); <-done }()
			r := &running{s: s, health: health}
			testutil.Eventually(b, 20*time.Second, r.ready, "bridge not ready: %v", health.Status())
			pub := e.publisher(b, "attacker")
			var grew uint64
			for i := 0; i < b.N; i++ {
				before := streamBytes(b, js, events.StreamRejected)
				msgs := make([]msg, n)
				for j := range msgs {
					msgs[j] = msg{events.ReportTopic("gateway", fmt.Sprintf("big-%d-%d", i, j)), bigPayload(size, j)}
				}
				start := s.Stats().Rejected
				publishAll(b, pub, msgs)
				testutil.Eventually(b, 60*time.Second, func() bool { return s.Stats().Rejected >= start+n },
					"bridge rejected %d of %d", s.Stats().Rejected-start, n)
				grew += streamBytes(b, js, events.StreamRejected) - before
			}
			b.ReportMetric(float64(size), "payload-B")
			b.ReportMetric(float64(grew)/float64(b.N), "REJECTED-B/20-payloads")
		})
	}
}

func streamBytes(tb testing.TB, js *testutil.JetStream, name string) uint64 {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := js.JS.Stream(ctx, name)
	if err != nil {
		tb.Fatal(err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		tb.Fatal(err)
	}
	return info.State.Bytes
}
