package api

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/otawatch/otawatch/events"
	"github.com/otawatch/otawatch/services/internal/svc"
	"github.com/otawatch/otawatch/services/internal/testutil"
)

// BenchmarkFoldFollow measures the api's SHADOW fold as the service runs
// it (its follower: consumer, decode, fold, bookkeeping) against a raw
// JetStream pull of the same events that only reads them, back to back
// in one run, and reports both rates and their ratio.
//
//	go test -run X -bench FoldFollow -benchtime 3x ./services/api/
func BenchmarkFoldFollow(b *testing.B) {
	const n = 100_000
	js := testutil.StartJetStream(b, testutil.JetStreamOptions{})
	last := fillShadow(b, js, n)
	ctx := context.Background()

	raw := func() time.Duration {
		cons, err := js.JS.OrderedConsumer(ctx, events.StreamShadow, jetstream.OrderedConsumerConfig{})
		if err != nil {
			b.Fatal(err)
		}
		start := time.Now()
		it, err := cons.Messages(jetstream.PullMaxMessages(1024))
		if err != nil {
			b.Fatal(err)
		}
		defer it.Stop()
		for {
			m, err := it.Next()
			if err != nil {
				b.Fatal(err)
			}
			meta, err := m.Metadata()
			if err != nil {
				b.Fatal(err)
			}
			if meta.Sequence.Stream == last {
				return time.Since(start)
			}
		}
	}
	fold := func() time.Duration {
		s, err := New(Config{}, svc.Deps{NC: js.NC, JS: js.JS})
		if err != nil {
			b.Fatal(err)
		}
		fctx, cancel := context.WithCancel(ctx)
		done := make(chan struct{})
		start := time.Now()
		go func() { defer close(done); runFold(fctx, s) }()
		for foldApplied(s) < last {
			time.Sleep(time.Millisecond)
		}
		d := time.Since(start)
		cancel()
		<-done
		if got := s.model.fleet.Len(); got != 1500 {
			b.Fatalf("fold has %d devices, want 1500", got)
		}
		return d
	}

	var rawD, foldD time.Duration
	for i := 0; i < b.N; i++ {
		rawD += raw()
		foldD += fold()
	}
	rawRate := float64(n*b.N) / rawD.Seconds()
	foldRate := float64(n*b.N) / foldD.Seconds()
	b.ReportMetric(rawRate, "raw_events/s")
	b.ReportMetric(foldRate, "fold_events/s")
	b.ReportMetric(foldRate/rawRate, "ratio")
	b.Logf("follow of %d SHADOW events: raw pull %.0f events/s, api fold %.0f events/s, ratio %.2f",
		n, rawRate, foldRate, foldRate/rawRate)
}

// runFold runs the service's SHADOW follower alone until ctx ends.
func runFold(ctx context.Context, s *Service) {
	_ = s.shadow.Run(ctx)
}

// foldApplied is the last SHADOW sequence the fold applied.
func foldApplied(s *Service) uint64 { return s.shadow.Applied() }
