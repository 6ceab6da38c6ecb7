package api

import (
	"context"
	"testing"

	"github.com/otawatch/otawatch/services/internal/testutil"
)

// BenchmarkDeviceHistory measures one history page of a device whose ~67
// reports are spread over a SHADOW of 100,000 events from 1,500 devices:
// newest first (windows read backwards) and oldest first (one consumer),
// by 10 and by 100. The ns/op is one page, bounds lookup included.
//
//	go test -run X -bench DeviceHistory -benchtime 20x ./services/api/
func BenchmarkDeviceHistory(b *testing.B) {
	js := testutil.StartJetStream(b, testutil.JetStreamOptions{})
	fillShadow(b, js, 100_000)
	ctx := context.Background()
	for _, bc := range []struct {
		name  string
		order string
		limit int
	}{
		{"desc/10", orderDesc, 10},
		{"desc/100", orderDesc, 100},
		{"asc/10", orderAsc, 10},
		{"asc/100", orderAsc, 100},
	} {
		b.Run(bc.name, func(b *testing.B) {
			var n int
			for i := 0; i < b.N; i++ {
				h, err := newDeviceHistory(ctx, js.JS, "sensor", "d0042")
				if err != nil {
					b.Fatal(err)
				}
				var page []historyEvent
				if bc.order == orderAsc {
					page, err = h.forward(ctx, 0, bc.limit)
				} else {
					page, err = h.backward(ctx, 0, bc.limit)
				}
				if err != nil {
					b.Fatal(err)
				}
				n = len(page)
			}
			b.ReportMetric(float64(n), "events/page")
		})
	}
}
