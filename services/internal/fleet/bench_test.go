package fleet

import (
	"fmt"
	"runtime"
	"testing"
	"time"

	"github.com/otawatch/otawatch/events"
)

// BenchmarkStateMemory is the heap the fleet state (the api's, the
// rollout orchestrator's and the audit report's) holds per device: 100,000
// devices, each with a desired state and a completed report.
func BenchmarkStateMemory(b *testing.B) {
	const devices = 100_000
	at := time.Date(2026, 3, 3, 9, 0, 0, 0, time.UTC)
	evs := make([]events.Event, 0, 2*devices)
	for i := range devices {
		dev := fmt.Sprintf("dev-%06d", i)
		d, err := events.New("d"+dev, events.SourceRollout, events.TypeShadowDesired, events.ShadowDesiredSubject("t", dev), at,
			events.ShadowDesiredData{TypeID: "t", DeviceID: dev, JobID: "job1", Wave: 1 + i/1000, Firmware: events.DesiredFirmware{Version: "4.2.1"}})
		if err != nil {
			b.Fatal(err)
		}
		fw := events.Firmware{Version: "4.2.1", Status: events.StatusCompleted, Timestamp: at, UpdateDuration: 61, PreviousVersion: "4.1.5", Checksum: "sha256:abc"}
		r, err := events.New(events.ReportEventID("t", dev, fw), events.SourceBridge, events.TypeShadowReported,
			events.ShadowReportedSubject("t", dev), at, events.ShadowReportedData{TypeID: "t", DeviceID: dev, Topic: events.ReportTopic("t", dev), Firmware: fw})
		if err != nil {
			b.Fatal(err)
		}
		evs = append(evs, d, r)
	}
	for range b.N {
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		s := New()
		for i, e := range evs {
			if _, err := s.Apply(uint64(i+1), e); err != nil {
				b.Fatal(err)
			}
		}
		runtime.GC()
		runtime.ReadMemStats(&after)
		runtime.KeepAlive(s)
		if s.Len() != devices {
			b.Fatalf("state holds %d devices, want %d", s.Len(), devices)
		}
		b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/devices, "heap_bytes/device")
	}
}
