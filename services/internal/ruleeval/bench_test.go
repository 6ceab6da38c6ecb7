package ruleeval

import (
	"context"
	"fmt"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/otawatch/otawatch/events"
	"github.com/otawatch/otawatch/rules"
)

const benchDevices = 10000

// benchFleet is an engine running the default rules over 10,000 devices in
// a running rollout of 10 waves: most completed, some failed, some in
// progress, some not heard from since their desired state.
func benchFleet(b *testing.B) (*Engine, time.Time) {
	b.Helper()
	set, err := rules.LoadDefaults()
	if err != nil {
		b.Fatal(err)
	}
	e := New(set, Options{})
	at := t0
	var seq uint64
	rollout := func(typ string, wave int) {
		ev, _ := events.New(fmt.Sprint("r", seq), events.SourceRollout, typ, "", at, events.RolloutData{JobID: "job1", Wave: wave, Target: &events.DesiredFirmware{Version: "4.2.1"}})
		seq++
		if _, err := e.ApplyRollout(seq, ev); err != nil {
			b.Fatal(err)
		}
	}
	rollout(events.TypeRolloutJobCreated, 0)
	rollout(events.TypeRolloutJobStarted, 0)
	for i := 0; i < benchDevices; i++ {
		dev := fmt.Sprintf("dev-%05d", i)
		wave := i/1000 + 1
		if i%1000 == 0 {
			rollout(events.TypeRolloutWaveStarted, wave)
		}
		at = at.Add(10 * time.Millisecond)
		ev, _ := events.New("d"+dev, events.SourceRollout, events.TypeShadowDesired, "", at,
			events.ShadowDesiredData{TypeID: "t", DeviceID: dev, JobID: "job1", Wave: wave, Firmware: events.DesiredFirmware{Version: "4.2.1"}})
		seq++
		if _, err := e.ApplyShadow(seq, ev); err != nil {
			b.Fatal(err)
		}
		var status string
		switch {
		case i%20 == 0:
			continue // silent
		case i%20 == 1:
			status = events.StatusFailed
		case i%5 == 2:
			status = events.StatusInProgress
		default:
			status = events.StatusCompleted
		}
		seq++
		if _, err := e.ApplyShadow(seq, benchReport(b, dev, status, float64(60+i%60), at.Add(time.Second))); err != nil {
			b.Fatal(err)
		}
	}
	return e, at.Add(2 * time.Second)
}

func benchReport(b *testing.B, dev, status string, dur float64, at time.Time) events.Event {
	fw := events.Firmware{Version: "4.2.1", Status: status, Timestamp: at, UpdateDuration: dur, PreviousVersion: "4.1.5", Checksum: "sha256:abc"}
	if status == events.StatusFailed {
		code := "E_FLASH"
		fw.ErrorCode = &code
	}
	ev, err := events.New(events.ReportEventID("t", dev, fw), events.SourceBridge, events.TypeShadowReported,
		events.ShadowReportedSubject("t", dev), at, events.ShadowReportedData{TypeID: "t", DeviceID: dev, Topic: events.ReportTopic("t", dev), Firmware: fw})
	if err != nil {
		b.Fatal(err)
	}
	return ev
}

func evaluations(e *Engine) uint64 {
	var n uint64
	for _, s := range e.Stats() {
		n += s.Evaluations
	}
	return n
}

var (
	baselineOnce              sync.Once
	baselineCEL, baselineJSON float64 // operations per second
)

// baselines measure, in the same run, a trivial CEL condition on the same
// variables and the JSON decode of one report: the raw costs a rule
// evaluation and an event are compared with.
func baselines(b *testing.B) {
	baselineOnce.Do(func() {
		e, _ := benchFleet(b)
		d, _ := e.Fleet().Device("t", "dev-00003")
		in := rules.Vars{Event: map[string]any{"kind": "tick"}, Device: DeviceVars(d), Fleet: FleetVars(e.Fleet().Metrics()),
			Rollout: RolloutVars(e.Jobs().Current(), e.Fleet().Wave("job1", 1)), Now: t0}.Input()
		c, err := rules.CompileCondition("trivial", "device.online == true")
		if err != nil {
			b.Fatal(err)
		}
		ctx := context.Background()
		baselineCEL = rate(func() {
			if _, err := c.EvalInput(ctx, in); err != nil {
				b.Fatal(err)
			}
		})
		raw, _ := benchReport(b, "dev-00003", events.StatusCompleted, 70, t0).Marshal()
		baselineJSON = rate(func() {
			ev, err := events.Decode(raw)
			if err != nil {
				b.Fatal(err)
			}
			var d events.ShadowReportedData
			if err := ev.DecodeData(&d); err != nil {
				b.Fatal(err)
			}
		})
	})
}

// rate runs fn for about a second and returns calls per second
// (testing.Benchmark cannot run inside a benchmark: it would deadlock).
func rate(fn func()) float64 {
	n, start := 0, time.Now()
	for time.Since(start) < time.Second {
		for i := 0; i < 1000; i++ {
			fn()
		}
		n += 1000
	}
	return float64(n) / time.Since(start).Seconds()
}

// BenchmarkRules measures rule evaluations per second with the default
// rules over 10,000 devices, against a trivial CEL condition on the same
// variables and against decoding the event's JSON. Run it on one core:
// go test -run x -bench Rules -cpu 1 ./services/internal/ruleeval
func BenchmarkRules(b *testing.B) {
	baselines(b)
	b.Run("baseline_trivial_cel", func(b *testing.B) {
		b.ReportMetric(baselineCEL, "evals/s")
	})
	b.Run("baseline_json_decode", func(b *testing.B) {
		b.ReportMetric(baselineJSON, "decodes/s")
	})
	// One report: decode, fold, the device's four rules and the fleet rule.
	b.Run("event", func(b *testing.B) {
		e, at := benchFleet(b)
		evs := make([]events.Event, 1000)
		for i := range evs {
			status := []string{events.StatusInProgress, events.StatusCompleted}[i%2]
			evs[i] = benchReport(b, fmt.Sprintf("dev-%05d", (i*37)%benchDevices), status, float64(60+i%50), at.Add(time.Duration(i)*time.Millisecond))
		}
		before := evaluations(e)
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			if _, err := e.ApplyShadow(uint64(1e6+i), evs[i%len(evs)]); err != nil {
				b.Fatal(err)
			}
		}
		b.StopTimer()
		perSec := float64(evaluations(e)-before) / b.Elapsed().Seconds()
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
		b.ReportMetric(perSec, "evals/s")
		b.ReportMetric(perSec/baselineCEL, "x_trivial_cel")
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds()/baselineJSON, "x_json_decode")
	})
	// One tick: stale-shadow for each of the 10,000 devices, then the fleet rule.
	b.Run("tick", func(b *testing.B) {
		e, at := benchFleet(b)
		before := evaluations(e)
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			e.Tick(at.Add(time.Duration(i) * time.Millisecond))
		}
		b.StopTimer()
		perSec := float64(evaluations(e)-before) / b.Elapsed().Seconds()
		b.ReportMetric(perSec, "evals/s")
		b.ReportMetric(perSec/baselineCEL, "x_trivial_cel")
		b.ReportMetric(float64(b.Elapsed().Milliseconds())/float64(b.N), "ms/tick")
	})
}

// BenchmarkEngineMemory is the heap the engine holds per device with the
// default rules over benchFleet's 10,000 devices in a rollout: what sizing
// a fleet's alerting process starts from.
func BenchmarkEngineMemory(b *testing.B) {
	for range b.N {
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		e, _ := benchFleet(b)
		runtime.GC()
		runtime.ReadMemStats(&after)
		runtime.KeepAlive(e)
		b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/benchDevices, "heap_bytes/device")
	}
}
