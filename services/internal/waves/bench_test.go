package waves

import (
	"fmt"
	"testing"
	"time"

	"github.com/otawatch/otawatch/events"
	"github.com/otawatch/otawatch/services/internal/fleet"
)

// BenchmarkJobProgress: every wave of a job of the default size (15 waves
// of 100), each device sent and reported: what the api's dashboard spends
// per started job on each rebuild, under its read model's read lock.
func BenchmarkJobProgress(b *testing.B) {
	f := &fold{t: &testing.T{}, s: fleet.New()}
	plan := make([][]events.DeviceRef, 15)
	var all []events.DeviceRef
	for w := range plan {
		for i := 0; i < 100; i++ {
			id := fmt.Sprintf("d-%05d", w*100+i)
			plan[w] = append(plan[w], ref(id))
			f.desire("j", id, t0)
			f.report(id, "2.0", events.StatusCompleted, t0.Add(time.Minute))
		}
		all = append(all, plan[w]...)
	}
	l := ledger(&testing.T{}, time.Hour, plan, all)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		var total events.WaveProgress
		for w := 1; w <= len(plan); w++ {
			total = total.Add(l.Progress(w, f.s, t0.Add(time.Hour)))
		}
		if total.Completed != 1500 {
			b.Fatalf("total %+v", total)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/1500, "ns/device")
}
