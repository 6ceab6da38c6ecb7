package bridge

import (
	"context"
	"fmt"
	"log/slog"
	"math"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/otawatch/otawatch/events"
	"github.com/otawatch/otawatch/services/internal/svc"
	"github.com/otawatch/otawatch/services/internal/testutil"
)

// benchPayloadSize is the size of every benchmark message, in bytes.
const benchPayloadSize = 300

// benchEnvInt reads a tuning knob of the benchmark from the environment.
func benchEnvInt(b *testing.B, name string, def int) int {
	s := os.Getenv(name)
	if s == "" {
		return def
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 {
		b.Fatalf("%s=%q is not a positive integer", name, s)
	}
	return n
}

// benchMsgs makes n reports of exactly benchPayloadSize bytes, unique across
// rounds (round is part of every device id), on the report topics under
// root ("iot-2" for the bridge, another root for the raw baseline so the
// bridge's persistent session does not collect them).
func benchMsgs(b *testing.B, root string, round, n int) []msg {
	out := make([]msg, n)
	for i := range n {
		d, _ := report(i)
		d.DeviceID = fmt.Sprintf("r%d-dev-%06d", round, i)
		payload := reportPayload(d.Firmware)
		pad := benchPayloadSize - len(payload) - len(`"clientToken":"",`)
		if pad < 0 {
			b.Fatalf("report %d is %d bytes, over %d", i, len(payload), benchPayloadSize)
		}
		payload = append([]byte(`{"clientToken":"`+strings.Repeat("p", pad)+`",`), payload[1:]...)
		topic := strings.Replace(events.ReportTopic(d.TypeID, d.DeviceID), "iot-2", root, 1)
		out[i] = msg{topic: topic, payload: payload}
	}
	return out
}

// benchPublish publishes msgs at QoS 1 as fast as paho takes them and
// waits for every PUBACK.
func benchPublish(b *testing.B, c mqtt.Client, msgs []msg) {
	toks := make([]mqtt.Token, len(msgs))
	for i, m := range msgs {
		toks[i] = c.Publish(m.topic, 1, false, m.payload)
	}
	for i, tok := range toks {
		if !tok.WaitTimeout(2*time.Minute) || tok.Error() != nil {
			b.Errorf("publish %d: %v", i, tok.Error())
			return
		}
	}
}

// benchClient connects a paho client of the benchmark harness. The raw
// subscriber uses the bridge's connection (buffered reads), so the two
// subscribers differ only in what they do with a message; the publisher is
// plain paho in both phases.
func benchClient(b *testing.B, url, id string, clean bool, handler mqtt.MessageHandler) mqtt.Client {
	opts := mqtt.NewClientOptions().AddBroker(url).SetClientID(id).SetCleanSession(clean).SetAutoReconnect(false)
	if handler != nil { // the subscriber
		opts.SetCustomOpenConnectionFn(connOpener("tcp", nil)).SetDefaultPublishHandler(handler)
	}
	c := mqtt.NewClient(opts)
	if tok := c.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		b.Fatalf("connect %s: %v", id, tok.Error())
	}
	return c
}

// benchRaw measures Mosquitto alone: one publisher, one QoS 1 subscriber
// (persistent session, acknowledging as it receives), publish to receipt
// of the last message. It returns msg/s. Client ids are the same every
// round, as the bridge's is, so no stale session collects messages.
func benchRaw(b *testing.B, url string, round int, msgs []msg) float64 {
	n := int64(len(msgs))
	var got atomic.Int64
	done := make(chan struct{})
	sub := benchClient(b, url, "bench-raw-sub", false, func(_ mqtt.Client, _ mqtt.Message) {
		if got.Add(1) == n {
			close(done)
		}
	})
	defer sub.Disconnect(100)
	filter := "rawbench/type/+/id/+/update/shadow"
	if tok := sub.Subscribe(filter, 1, nil); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		b.Fatalf("subscribe: %v", tok.Error())
	}
	pub := benchClient(b, url, fmt.Sprintf("bench-raw-pub-%d", round), true, nil)
	defer pub.Disconnect(100)

	start := time.Now()
	benchPublish(b, pub, msgs)
	select {
	case <-done:
	case <-time.After(2 * time.Minute):
		b.Fatalf("raw: %d of %d messages received after 2 minutes: the broker dropped some", got.Load(), n)
	}
	return float64(n) / time.Since(start).Seconds()
}

// benchBridge measures publisher -> Mosquitto -> bridge -> SHADOW: from the
// first publish until the bridge has every report stored (PubAck), then
// checks the stream holds them all. It returns msg/s. Without js.Server
// the bridge uses js.NC.
func benchBridge(b *testing.B, url string, js *testutil.JetStream, round int, msgs []msg, maxInFlight int) float64 {
	n := uint64(len(msgs))
	before := js.Count(b, events.StreamShadow)
	// In-process, as in one-process mode; over the network to a server
	// the benchmark did not embed (a cluster).
	nc := js.NC
	if js.Server != nil {
		c, err := js.Server.Connect("bench-bridge")
		if err != nil {
			b.Fatal(err)
		}
		defer c.Close()
		nc = c
	}
	health := svc.NewHealth()
	s, err := New(Config{Broker: url, ClientID: "bench-bridge", MaxInFlight: maxInFlight},
		svc.Deps{Log: slog.New(slog.DiscardHandler), NC: nc, Health: health})
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	runDone := make(chan error, 1)
	go func() { runDone <- s.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-runDone; err != nil {
			b.Errorf("bridge: %v", err)
		}
	}()
	ready := func() bool { st := health.Status(); return len(st) == 1 && st[0].Err == nil }
	testutil.Eventually(b, 20*time.Second, ready, "bridge not ready")

	pub := benchClient(b, url, fmt.Sprintf("bench-bridge-pub-%d", round), true, nil)
	defer pub.Disconnect(100)
	start := time.Now()
	benchPublish(b, pub, msgs)
	deadline := start.Add(3 * time.Minute)
	for {
		st := s.Stats()
		if st.Accepted+st.Duplicates >= n {
			break
		}
		if time.Now().After(deadline) {
			b.Fatalf("bridge: %d of %d reports stored after 3 minutes (%+v)", st.Accepted, n, st)
		}
		time.Sleep(time.Millisecond)
	}
	elapsed := time.Since(start)
	if st := s.Stats(); st.Accepted != n || st.Rejected != 0 {
		b.Errorf("bridge stats %+v, want %d accepted, none rejected", st, n)
	}
	if got := js.Count(b, events.StreamShadow) - before; got != n {
		b.Errorf("SHADOW gained %d events, want %d", got, n)
	}
	return float64(n) / elapsed.Seconds()
}

// cpuTime is the CPU time (user + system) this process has used: the
// publisher, subscriber or bridge, and the embedded NATS server, but not
// Mosquitto.
func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func median(v []float64) float64 {
	s := append([]float64(nil), v...)
	sort.Float64s(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// BenchmarkIngest measures, in one run on one Mosquitto (the limits of
// deploy/mosquitto), raw QoS 1 publish -> subscribe throughput and the
// bridge's MQTT -> JetStream throughput (publisher -> Mosquitto -> bridge ->
// SHADOW, counted when stored), 300 B reports, and reports both and their
// ratio. Each iteration runs both phases; the metrics are medians over the
// iterations (scripts/bench ingest runs 3): bridge/raw_% is the ratio of
// the median rates, paired_bridge/raw_% the median of each round's ratio.
//
// A third phase publishes the same events straight to JetStream (the
// bridge's own publisher, no MQTT), the other raw part of the bridge's
// path. With the CPU each phase costs per message (this process's, and
// Mosquitto's, read from /proc), it bounds the ratio where the machine is
// CPU-bound: a bridge that cost nothing beyond a raw subscriber plus a raw
// JetStream publish would reach (raw + mosquitto) / (raw + mosquitto +
// jetstream) of the raw rate (ceiling_%).
//
// Knobs: OTAWATCH_BENCH_MSGS (reports per phase, default 50000),
// OTAWATCH_BENCH_INFLIGHT (the bridge's max_in_flight, default the
// configuration default).
func BenchmarkIngest(b *testing.B) {
	n := benchEnvInt(b, "OTAWATCH_BENCH_MSGS", 50000)
	inFlight := benchEnvInt(b, "OTAWATCH_BENCH_INFLIGHT", DefaultMaxInFlight)
	m := testutil.StartMosquitto(b)
	js := testutil.StartJetStream(b, testutil.JetStreamOptions{})
	var raws, bridges, ratios, rawCPUs, brCPUs, jsRates, jsCPUs, rawMosqs, brMosqs, ceilings []float64
	b.ResetTimer()
	for round := 0; round < b.N; round++ {
		b.StopTimer()
		rawMsgs := benchMsgs(b, "rawbench", round, n)
		bridgeMsgs := benchMsgs(b, "iot-2", round, n)
		b.StartTimer()
		cpu0, mq0 := cpuTime(b), processCPUOf(b, m.PID())
		raw := math.NaN()
		if os.Getenv("OTAWATCH_BENCH_SKIP_RAW") == "" { // for profiling the bridge alone
			raw = benchRaw(b, m.URL, round, rawMsgs)
		}
		cpu1, mq1 := cpuTime(b), processCPUOf(b, m.PID())
		br := benchBridge(b, m.URL, js, round, bridgeMsgs, inFlight)
		cpu2, mq2 := cpuTime(b), processCPUOf(b, m.PID())
		jsRate, jsUsed := benchJetStream(b, js, round, n, inFlight)
		per := func(d time.Duration) float64 { return float64(d.Microseconds()) / float64(n) }
		rawCPU, brCPU, jsCPU := per(cpu1-cpu0), per(cpu2-cpu1), per(jsUsed)
		rawMosq, brMosq := per(mq1-mq0), per(mq2-mq1)
		ceiling := 100 * (rawCPU + rawMosq) / (rawCPU + rawMosq + jsCPU)
		raws, bridges, ratios = append(raws, raw), append(bridges, br), append(ratios, 100*br/raw)
		rawCPUs, brCPUs, jsRates, jsCPUs = append(rawCPUs, rawCPU), append(brCPUs, brCPU), append(jsRates, jsRate), append(jsCPUs, jsCPU)
		rawMosqs, brMosqs, ceilings = append(rawMosqs, rawMosq), append(brMosqs, brMosq), append(ceilings, ceiling)
		b.Logf("round %d: raw mosquitto %.0f msg/s, bridge %.0f msg/s, bridge/raw %.1f%%; raw JetStream publish %.0f msg/s; "+
			"CPU per msg: raw %.1f us here + %.1f us in Mosquitto, bridge %.1f us here + %.1f us in Mosquitto, JetStream publish %.1f us; "+
			"ceiling where CPU-bound %.0f%% (%d msgs of %d B, max_in_flight %d)",
			round+1, raw, br, 100*br/raw, jsRate, rawCPU, rawMosq, brCPU, brMosq, jsCPU, ceiling, n, benchPayloadSize, inFlight)
	}
	raw, br := median(raws), median(bridges)
	b.ReportMetric(raw, "raw_msg/s")
	b.ReportMetric(br, "bridge_msg/s")
	b.ReportMetric(100*br/raw, "bridge/raw_%")
	// Each round's two phases run back to back, so their ratio is
	// measured under the same conditions; its median is steadier than the
	// ratio of the medians when the machine's load changes between rounds.
	b.ReportMetric(median(ratios), "paired_bridge/raw_%")
	b.ReportMetric(median(rawCPUs), "raw_cpu_us/msg")
	b.ReportMetric(median(brCPUs), "bridge_cpu_us/msg")
	b.ReportMetric(median(rawMosqs), "raw_mosquitto_cpu_us/msg")
	b.ReportMetric(median(brMosqs), "bridge_mosquitto_cpu_us/msg")
	b.ReportMetric(median(jsRates), "raw_jetstream_msg/s")
	b.ReportMetric(median(jsCPUs), "raw_jetstream_cpu_us/msg")
	b.ReportMetric(median(ceilings), "ceiling_%")
}

// benchJetStream publishes n report events straight to SHADOW with the
// bridge's publisher (Nats-Msg-Id, the expected stream, at most inFlight
// waiting for their PubAck), no MQTT: the JetStream part of the bridge's
// path alone. It returns msg/s and the CPU time this process used meanwhile
// (making the events not counted).
func benchJetStream(b *testing.B, js *testutil.JetStream, round, n, inFlight int) (float64, time.Duration) {
	bodies := make([]*pending, n)
	now := time.Now()
	for i := range n {
		d, _ := report(i)
		d.DeviceID = fmt.Sprintf("j%d-dev-%06d", round, i)
		p := &pending{subject: events.ShadowReportedSubject(d.TypeID, d.DeviceID), msgID: events.ReportEventID(d.TypeID, d.DeviceID, d.Firmware),
			stream: events.StreamShadow}
		var err error
		if p.body, err = reportEvent(p.msgID, p.subject, now, &d); err != nil {
			b.Fatal(err)
		}
		bodies[i] = p
	}
	slots := make(chan struct{}, inFlight)
	var stored atomic.Int64
	done := make(chan struct{})
	pb, err := newPublisher(js.NC, 10*time.Second, func(_ *pending, _ pubAck, err error) {
		if err != nil {
			b.Errorf("raw JetStream publish: %v", err)
		}
		<-slots
		if stored.Add(1) == int64(n) {
			close(done)
		}
	})
	if err != nil {
		b.Fatal(err)
	}
	defer func() { _ = pb.close() }()
	cpu0, start := cpuTime(b), time.Now()
	for _, p := range bodies {
		slots <- struct{}{}
		if err := pb.publish(p); err != nil {
			b.Fatal(err)
		}
	}
	select {
	case <-done:
	case <-time.After(2 * time.Minute):
		b.Fatalf("raw JetStream: %d of %d stored after 2 minutes", stored.Load(), n)
	}
	return float64(n) / time.Since(start).Seconds(), cpuTime(b) - cpu0
}

// processCPUOf is the CPU time (user + system) process pid has used, from
// /proc (clock ticks: 10 ms).
func processCPUOf(b *testing.B, pid int) time.Duration {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		b.Fatalf("cpu time of %d: %v", pid, err)
	}
	// The fields after the command's closing parenthesis; utime and
	// stime are the 14th and 15th of the whole line.
	f := strings.Fields(string(stat[strings.LastIndexByte(string(stat), ')')+1:]))
	utime, err1 := strconv.ParseInt(f[11], 10, 64)
	stime, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		b.Fatalf("cpu time of %d: %q", pid, stat)
	}
	return time.Duration(utime+stime) * time.Second / 100
}
