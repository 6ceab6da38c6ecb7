package alerting

import (
	"context"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/otawatch/otawatch/services/internal/testutil"
)

// BenchmarkReplay measures `otawatch replay alerting`'s work: Replay over
// OTAWATCH_BENCH_EVENTS (100,000) recorded reports of 10,000 devices (1 ms
// apart) with the default rules and a 5 s tick over the whole history,
// compared with ALERTS. It reports SHADOW events replayed per second.
//
//	go test -run x -bench Replay -benchtime 3x ./services/alerting
func BenchmarkReplay(b *testing.B) {
	n := 100000
	if v, err := strconv.Atoi(os.Getenv("OTAWATCH_BENCH_EVENTS")); err == nil && v > 0 {
		n = v
	}
	js := testutil.StartJetStream(b, testutil.JetStreamOptions{})
	preloadReports(b, js.JS, n, 10000)
	rulesDir := b.TempDir()
	testutil.WriteRules(b, rulesDir, "", "", "")
	ctx := context.Background()
	b.ResetTimer()
	var took time.Duration
	for i := 0; i < b.N; i++ {
		began := time.Now()
		c, err := Replay(ctx, js.JS, Config{TickInterval: DefaultTickInterval}, ReplayOptions{
			From: t0, To: t0.Add(time.Duration(n) * time.Millisecond), RulesDir: rulesDir})
		if err != nil {
			b.Fatal(err)
		}
		took += time.Since(began)
		if c.Engine.ShadowSeq != uint64(n) || c.Engine.Fleet().Len() != min(n, 10000) {
			b.Fatalf("replayed SHADOW to %d with %d devices, want %d", c.Engine.ShadowSeq, c.Engine.Fleet().Len(), n)
		}
	}
	b.ReportMetric(float64(n)*float64(b.N)/took.Seconds(), "events/s")
}
