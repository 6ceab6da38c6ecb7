package alerting

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sort"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/otawatch/otawatch/events"
	"github.com/otawatch/otawatch/services/internal/svc"
	"github.com/otawatch/otawatch/services/internal/testutil"
)

// BenchmarkFollow measures how fast the alerting service folds SHADOW
// with the default rules: a fresh service (no snapshot) started on a
// stream of OTAWATCH_BENCH_EVENTS (100,000) reports of 10,000 devices,
// timed from Run until it has caught up. The baseline, in the same run and
// round, is a plain ordered-consumer pull of the same events (the log's own
// ceiling for a reader that keeps its position itself, as alerting does).
// Each iteration is one round of both; the summary reports the medians and
// the ratio of the medians.
//
//	go test -run x -bench Follow -benchtime 3x ./services/alerting
func BenchmarkFollow(b *testing.B) {
	n := 100000
	if v, err := strconv.Atoi(os.Getenv("OTAWATCH_BENCH_EVENTS")); err == nil && v > 0 {
		n = v
	}
	js := testutil.StartJetStream(b, testutil.JetStreamOptions{})
	preloadReports(b, js.JS, n, 10000)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))

	var raw, fol []float64
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		raw = append(raw, float64(n)/rawPull(b, js.JS, n).Seconds())

		// A bucket of its own per round: no snapshot to start from.
		cfg := Config{SnapshotBucket: fmt.Sprintf("bench_follow_%d", i), LeaseBucket: fmt.Sprintf("bench_lease_%d", i)}
		s, err := New(cfg, svc.Deps{Log: log, NC: js.NC, JS: js.JS, Streams: events.StreamOptions{Replicas: 1}})
		if err != nil {
			b.Fatal(err)
		}
		s.crashOnStop = true // no final snapshot: it is not part of the fold
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		began := time.Now()
		go func() { done <- s.Run(ctx) }()
		for !s.Status().CaughtUp {
			time.Sleep(time.Millisecond)
		}
		took := time.Since(began)
		cancel()
		if err := <-done; err != nil {
			b.Fatal(err)
		}
		if st := s.Status(); st.Devices != 10000 || st.ShadowSeq < uint64(n) {
			b.Fatalf("after the fold: %d devices at SHADOW %d, want 10000 at %d", st.Devices, st.ShadowSeq, n)
		}
		fol = append(fol, float64(n)/took.Seconds())
		b.Logf("round %d: raw pull %.0f events/s, alerting follow %.0f events/s (%.0f%%)", i+1, raw[i], fol[i], 100*fol[i]/raw[i])
	}
	b.StopTimer()
	med := func(xs []float64) float64 {
		s := append([]float64(nil), xs...)
		sort.Float64s(s)
		return s[len(s)/2]
	}
	b.ReportMetric(med(raw), "raw_pull_events/s")
	b.ReportMetric(med(fol), "follow_events/s")
	b.ReportMetric(100*med(fol)/med(raw), "follow/raw_%")
}

// rawPull reads n events of SHADOW with an ordered consumer, the way the
// service reads them, and returns how long it took.
func rawPull(b *testing.B, js jetstream.JetStream, n int) time.Duration {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	began := time.Now()
	cons, err := js.OrderedConsumer(ctx, events.StreamShadow, jetstream.OrderedConsumerConfig{})
	if err != nil {
		b.Fatal(err)
	}
	it, err := cons.Messages(jetstream.PullMaxMessages(1024))
	if err != nil {
		b.Fatal(err)
	}
	defer it.Stop()
	for got := 0; got < n; got++ {
		m, err := it.Next(jetstream.NextContext(ctx))
		if err != nil {
			b.Fatal(err)
		}
		if _, err := m.Metadata(); err != nil {
			b.Fatal(err)
		}
	}
	return time.Since(began)
}

// preloadReports stores n completed reports of devs devices on SHADOW.
func preloadReports(b *testing.B, js jetstream.JetStream, n, devs int) {
	b.Helper()
	for i := 0; i < n; i++ {
		dev := fmt.Sprintf("fleet-%05d", i%devs)
		when := t0.Add(time.Duration(i) * time.Millisecond)
		fw := events.Firmware{Version: "4.2." + strconv.Itoa(i/devs), Timestamp: when, Status: events.StatusCompleted, UpdateDuration: float64(60 + i%60)}
		ev, err := events.New(events.ReportEventID("t", dev, fw), events.SourceBridge, events.TypeShadowReported,
			events.ShadowReportedSubject("t", dev), when, events.ShadowReportedData{TypeID: "t", DeviceID: dev, Topic: events.ReportTopic("t", dev), Firmware: fw})
		if err != nil {
			b.Fatal(err)
		}
		data, err := ev.Marshal()
		if err != nil {
			b.Fatal(err)
		}
		msg := nats.NewMsg(ev.Subject)
		msg.Data = data
		msg.Header.Set(jetstream.MsgIDHeader, ev.ID)
		for {
			if _, err = js.PublishMsgAsync(msg); err == nil {
				break
			}
			<-js.PublishAsyncComplete()
		}
	}
	select {
	case <-js.PublishAsyncComplete():
	case <-time.After(2 * time.Minute):
		b.Fatal("preload did not complete")
	}
}
