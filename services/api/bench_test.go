package api

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/otawatch/otawatch/events"
	"github.com/otawatch/otawatch/services/internal/svc"
	"github.com/otawatch/otawatch/services/internal/testutil"
)

// fillShadow stores n reports of 1,500 devices on SHADOW, fast (async
// publish), and returns the last sequence.
func fillShadow(b *testing.B, js *testutil.JetStream, n int) uint64 {
	b.Helper()
	ctx := context.Background()
	statuses := []string{events.StatusInProgress, events.StatusCompleted, events.StatusFailed}
	for i := 0; i < n; i++ {
		dev := fmt.Sprintf("d%04d", i%1500)
		fw := events.Firmware{Version: "2.0", Status: statuses[i%3], Timestamp: t0.Add(time.Duration(i) * time.Millisecond), UpdateDuration: float64(i % 300)}
		e, err := events.New(events.ReportEventID("sensor", dev, fw), events.SourceBridge, events.TypeShadowReported, dev, fw.Timestamp,
			events.ShadowReportedData{TypeID: "sensor", DeviceID: dev, Firmware: fw})
		if err != nil {
			b.Fatal(err)
		}
		data, _ := e.Marshal()
		for {
			_, err = js.JS.PublishAsync(events.ShadowReportedSubject("sensor", dev), data)
			if err == nil {
				break
			}
			<-js.JS.PublishAsyncComplete()
		}
	}
	select {
	case <-js.JS.PublishAsyncComplete():
	case <-time.After(time.Minute):
		b.Fatal("publishes not acknowledged")
	}
	s, err := js.JS.Stream(ctx, events.StreamShadow)
	if err != nil {
		b.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		b.Fatal(err)
	}
	return info.State.LastSeq
}

// BenchmarkReadModelReplay measures how fast the api rebuilds its fleet
// state from SHADOW at start (what /readyz waits for), against a raw
// ordered consumer that only reads the same messages, in the same run.
//
//	go test -run X -bench ReadModelReplay -benchtime 1x ./services/api/
func BenchmarkReadModelReplay(b *testing.B) {
	const n = 100_000
	js := testutil.StartJetStream(b, testutil.JetStreamOptions{})
	last := fillShadow(b, js, n)
	ctx := context.Background()

	drain := func(apply func(seq uint64, data []byte)) time.Duration {
		done := make(chan struct{})
		cons, err := js.JS.OrderedConsumer(ctx, events.StreamShadow, jetstream.OrderedConsumerConfig{})
		if err != nil {
			b.Fatal(err)
		}
		start := time.Now()
		cc, err := cons.Consume(func(m jetstream.Msg) {
			meta, _ := m.Metadata()
			apply(meta.Sequence.Stream, m.Data())
			if meta.Sequence.Stream == last {
				close(done)
			}
		})
		if err != nil {
			b.Fatal(err)
		}
		defer cc.Stop()
		select {
		case <-done:
		case <-time.After(5 * time.Minute):
			b.Fatal("replay did not finish")
		}
		return time.Since(start)
	}

	var raw, fold time.Duration
	for i := 0; i < b.N; i++ {
		raw += drain(func(uint64, []byte) {})
		m := newModel()
		fold += drain(func(seq uint64, data []byte) {
			e, err := events.Decode(data)
			if err == nil {
				err = m.applyShadow(seq, e)
			}
			if err != nil {
				b.Fatal(err)
			}
		})
		if got := m.fleet.Len(); got != 1500 {
			b.Fatalf("fold has %d devices, want 1500", got)
		}
	}
	rawRate := float64(n*b.N) / raw.Seconds()
	foldRate := float64(n*b.N) / fold.Seconds()
	b.ReportMetric(rawRate, "raw_msgs/s")
	b.ReportMetric(foldRate, "fold_msgs/s")
	b.ReportMetric(foldRate/rawRate, "ratio")
	b.Logf("replay of %d SHADOW events: raw ordered consume %.0f msg/s, api read model %.0f msg/s, ratio %.2f",
		n, rawRate, foldRate, foldRate/rawRate)
}

// BenchmarkSSELatency measures, over the same events in one run, the time
// from a JetStream publish to the event arriving on a device's SSE stream,
// against the time to a raw ordered consumer with the same filter. Prints
// p50 and p99 of both.
//
//	go test -run X -bench SSELatency -benchtime 1x ./services/api/
func BenchmarkSSELatency(b *testing.B) {
	const samples = 500
	js := testutil.StartJetStream(b, testutil.JetStreamOptions{})
	s, err := New(Config{Listen: "127.0.0.1:0"}, svc.Deps{NC: js.NC, JS: js.JS})
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	defer func() { cancel(); <-done }()
	for s.Addr() == "" {
		time.Sleep(10 * time.Millisecond)
	}
	resp, err := http.Get("http://" + s.Addr() + sseBase + "?since=0")
	if err != nil {
		b.Fatal(err)
	}
	defer resp.Body.Close()
	sseIDs := make(chan uint64, samples)
	go func() {
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			if id, ok := strings.CutPrefix(sc.Text(), "id: "); ok {
				n, _ := strconv.ParseUint(id, 10, 64)
				sseIDs <- n
			}
		}
	}()
	rawIDs := make(chan uint64, samples)
	cons, err := js.JS.OrderedConsumer(ctx, events.StreamShadow, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{events.ShadowReportedSubject("sensor", "d1")}})
	if err != nil {
		b.Fatal(err)
	}
	cc, err := cons.Consume(func(m jetstream.Msg) {
		meta, _ := m.Metadata()
		rawIDs <- meta.Sequence.Stream
	})
	if err != nil {
		b.Fatal(err)
	}
	defer cc.Stop()

	wait := func(ch chan uint64, seq uint64) {
		for {
			select {
			case got := <-ch:
				if got == seq {
					return
				}
			case <-time.After(10 * time.Second):
				b.Fatalf("seq %d not received", seq)
			}
		}
	}
	var sseLat, rawLat []time.Duration
	for i := 0; i < samples*b.N; i++ {
		fw := events.Firmware{Version: "2.0", Status: events.StatusInProgress, Timestamp: t0.Add(time.Duration(i) * time.Second)}
		e, _ := events.New(events.ReportEventID("sensor", "d1", fw), events.SourceBridge, events.TypeShadowReported, "d1", fw.Timestamp,
			events.ShadowReportedData{TypeID: "sensor", DeviceID: "d1", Firmware: fw})
		data, _ := e.Marshal()
		start := time.Now()
		ack, err := js.JS.Publish(ctx, events.ShadowReportedSubject("sensor", "d1"), data)
		if err != nil {
			b.Fatal(err)
		}
		// Both receivers run concurrently; each latency is publish start
		// to that receiver's arrival.
		var wg sync.WaitGroup
		var sl, rl time.Duration
		wg.Add(2)
		go func() { defer wg.Done(); wait(sseIDs, ack.Sequence); sl = time.Since(start) }()
		go func() { defer wg.Done(); wait(rawIDs, ack.Sequence); rl = time.Since(start) }()
		wg.Wait()
		sseLat, rawLat = append(sseLat, sl), append(rawLat, rl)
	}
	pct := func(d []time.Duration, p float64) time.Duration {
		sort.Slice(d, func(i, j int) bool { return d[i] < d[j] })
		return d[int(p*float64(len(d)-1))]
	}
	b.ReportMetric(float64(pct(sseLat, 0.5).Microseconds()), "sse_p50_us")
	b.ReportMetric(float64(pct(sseLat, 0.99).Microseconds()), "sse_p99_us")
	b.ReportMetric(float64(pct(rawLat, 0.5).Microseconds()), "raw_p50_us")
	b.ReportMetric(float64(pct(rawLat, 0.99).Microseconds()), "raw_p99_us")
	b.Logf("publish -> receive over %d events: SSE p50 %s p99 %s; raw ordered consumer p50 %s p99 %s",
		len(sseLat), pct(sseLat, 0.5), pct(sseLat, 0.99), pct(rawLat, 0.5), pct(rawLat, 0.99))
}
