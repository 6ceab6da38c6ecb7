package audit

import (
	"context"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/otawatch/otawatch/events"
	"github.com/otawatch/otawatch/services/internal/svc"
	"github.com/otawatch/otawatch/services/internal/testutil"
)

// BenchmarkChainFollow: a fresh audit service chains OTAWATCH_BENCH_EVENTS
// (200,000) stored reports and checkpoints every 10,000; timed until the
// checkpoint of the last one is on AUDIT. It says whether one instance
// keeps up with the bridge (about 50k reports/s, README "Benchmarks").
func BenchmarkChainFollow(b *testing.B) {
	n := 200000
	if v, err := strconv.Atoi(os.Getenv("OTAWATCH_BENCH_EVENTS")); err == nil && v > 0 {
		n = v - v%10000
	}
	for i := 0; i < b.N; i++ {
		j := testutil.StartJetStream(b, testutil.JetStreamOptions{})
		for k := 0; k < n; k += 10000 {
			publishReports(b, j.JS, k, 10000)
		}
		s, err := New(Config{CheckpointEvery: 10000, CheckpointInterval: time.Hour}, svc.Deps{JS: j.JS, NC: j.NC})
		if err != nil {
			b.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		began := time.Now()
		done := make(chan error, 1)
		go func() { done <- s.Run(ctx) }()
		st, err := j.JS.Stream(ctx, events.StreamAudit)
		if err != nil {
			b.Fatal(err)
		}
		for {
			m, err := st.GetLastMsgForSubject(ctx, events.AuditCheckpointSubject(events.StreamShadow))
			if err == nil {
				if cp, err := decodeCheckpoint(m.Data); err == nil && cp.Seq == uint64(n) {
					break
				}
			}
			time.Sleep(5 * time.Millisecond)
		}
		el := time.Since(began)
		cancel()
		<-done
		b.ReportMetric(float64(n)/el.Seconds(), "events/s")
	}
}
