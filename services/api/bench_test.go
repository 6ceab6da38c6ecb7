package api

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/otawatch/otawatch/events"
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
			if err := m.applyShadow(seq, data); err != nil {
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
