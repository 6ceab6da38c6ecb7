package rollout

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/otawatch/otawatch/events"
)

// TestWhatIfOnSteppedRecording runs what-ifs on one recorded rollout (see
// steppedScenario): its own settings give back the recorded decisions
// exactly; a stricter failure policy pauses where a count over the
// recorded reports says; a gate the recorded reports never reach leaves
// the job waiting in that wave.
func TestWhatIfOnSteppedRecording(t *testing.T) {
	st, spec := steppedScenario(t)
	rec := st.readRecording(spec.ID)
	if len(rec.Shadow) == 0 || len(rec.Job) == 0 {
		t.Fatalf("empty recording: %d job events, %d SHADOW events", len(rec.Job), len(rec.Shadow))
	}

	t.Run("own settings reproduce the recording", func(t *testing.T) {
		res, err := WhatIf(rec, WhatIfOptions{Tick: st.step})
		if err != nil {
			t.Fatal(err)
		}
		if !res.Reproduces {
			t.Fatalf("the what-if does not reproduce the recording: %s\nwhat-if:%s\nrecorded:%s", res.Difference, fmtDecisions(res.Decisions), fmtDecisions(res.Actual))
		}
		// 4 waves: each started, gated, completed; then job_completed.
		if len(res.Decisions) != 13 || len(res.Changed) != 0 {
			t.Errorf("%d decisions, changed %v; want the 13 of 4 waves and nothing changed:%s", len(res.Decisions), res.Changed, fmtDecisions(res.Decisions))
		}
		if res.End.Status != events.RolloutCompleted || res.End.Sent != 40 || !res.End.At.Equal(res.ActualEnd.At) {
			t.Errorf("what-if end %+v, recorded %+v; want both completed at the same time with 40 sent", res.End, res.ActualEnd)
		}
	})

	t.Run("stricter failure policy pauses where counted", func(t *testing.T) {
		strict := 0.1
		want := expectPause(t, rec, strict, st.step)
		if want.Wave == 0 {
			t.Fatal("the scenario never trips a 10% failure policy; the test needs it to")
		}
		res, err := WhatIf(rec, WhatIfOptions{Tick: st.step, MaxFailure: &strict})
		if err != nil {
			t.Fatal(err)
		}
		got := res.End
		reason := fmt.Sprintf("wave %d has %d failed and %d timed out of %d online devices", want.Wave, want.failed, want.timedOut, want.online)
		if got.Status != events.RolloutPaused || got.By != events.ByFailurePolicy || got.Wave != want.Wave || !got.At.Equal(want.At) ||
			got.Sent != want.Sent || !strings.Contains(got.Reason, reason) {
			t.Errorf("what-if with max failure 10%%: %+v\nwant paused by the failure policy in wave %d at %s with %d sent, reason with %q\ndecisions:%s",
				got, want.Wave, want.At.Format("15:04:05.000"), want.Sent, reason, fmtDecisions(res.Decisions))
		}
		if res.Reproduces || res.ActualEnd.Status != events.RolloutCompleted {
			t.Errorf("reproduces %v, actual end %+v: want a difference from the completed recording", res.Reproduces, res.ActualEnd)
		}
		if len(res.Changed) != 1 || res.Changed[0] != "max failure 0.3 -> 0.1" {
			t.Errorf("changed %q", res.Changed)
		}
	})

	t.Run("unreachable gate waits", func(t *testing.T) {
		// Wave 2 has two failures: with a gate of 100% its gate never
		// passes, and a lax policy never pauses it.
		all, lax := 1.0, 0.5
		res, err := WhatIf(rec, WhatIfOptions{Tick: st.step, Gate: &all, MaxFailure: &lax})
		if err != nil {
			t.Fatal(err)
		}
		if res.End.Status != "waiting" || res.End.Wave != 2 || res.End.Sent != 20 || !strings.Contains(res.End.Reason, "8 of 10 online devices completed; gate 100% needs 10") {
			t.Errorf("what-if with gate 100%%: %+v; want waiting in wave 2 with 20 sent and 8 of 10 completed", res.End)
		}
	})

	t.Run("cel gate", func(t *testing.T) {
		// Every device of the wave completed, as the fleet's wave counts
		// say: wave 2 (two failures) never gets there.
		expr := "rollout.waveCompleted >= rollout.waveTargeted"
		lax := 0.5
		if _, err := WhatIf(rec, WhatIfOptions{Tick: st.step, CELGate: &expr}); err == nil || !strings.Contains(err.Error(), "AllDevices") {
			t.Errorf("a CEL gate on a recording of the job's devices only: %v", err)
		}
		res, err := WhatIf(st.readRecordingAll(spec.ID), WhatIfOptions{Tick: st.step, CELGate: &expr, MaxFailure: &lax})
		if err != nil {
			t.Fatal(err)
		}
		if res.End.Status != "waiting" || res.End.Wave != 2 || !strings.Contains(res.End.Reason, "cel gate: "+expr+" is false") {
			t.Errorf("what-if with CEL gate %q: %+v; want waiting in wave 2 on the CEL gate", expr, res.End)
		}
		if g := res.Waves[0].Gate; g == nil || g.CEL == nil || !*g.CEL {
			t.Errorf("wave 1 gate %+v: want the CEL gate evaluated and holding", g)
		}
	})

	t.Run("no soak moves each wave earlier by the soaks saved", func(t *testing.T) {
		// Each wave's devices are sent as in the recording (the rate
		// limit's bucket is full again when a wave starts: its sends end
		// ticks before its gate) and report at their recorded offsets from
		// their send: without the 2 s soak, wave w starts, and passes its
		// gate, 2 s earlier for each wave before it, with the same counts,
		// and completes as it passes its gate.
		zero := time.Duration(0)
		res, err := WhatIf(rec, WhatIfOptions{Tick: st.step, Soak: &zero})
		if err != nil {
			t.Fatal(err)
		}
		soak := time.Duration(spec.Soak)
		for i, got := range res.Waves {
			want := res.ActualWaves[i]
			early := time.Duration(i) * soak
			if !got.Started.Equal(want.Started.Add(-early)) || !got.Gated.Equal(want.Gated.Add(-early)) || !got.Completed.Equal(got.Gated) ||
				got.Gate == nil || want.Gate == nil || *got.Gate != *want.Gate {
				t.Errorf("wave %d: what-if started %s gated %s completed %s (%+v); recorded started %s gated %s (%+v); want %s earlier, completed at the gate",
					i+1, got.Started.Format("15:04:05"), got.Gated.Format("15:04:05"), got.Completed.Format("15:04:05"), got.Gate,
					want.Started.Format("15:04:05"), want.Gated.Format("15:04:05"), want.Gate, early)
			}
		}
	})

	t.Run("wave size regroups the devices in order", func(t *testing.T) {
		size := 20
		res, err := WhatIf(rec, WhatIfOptions{Tick: st.step, WaveSize: &size})
		if err != nil {
			t.Fatal(err)
		}
		if len(res.Waves) != 2 || res.Waves[0].Devices != 20 || res.Waves[1].Devices != 20 {
			t.Fatalf("waves %+v; want 2 of 20", res.Waves)
		}
		// Wave 1 is devices 1-20 (two failures: 2 of 18 online... all 20
		// online): 16 completions pass 80%; wave 2 (three bad) too.
		if res.End.Status != events.RolloutCompleted || res.End.Sent != 40 {
			t.Errorf("what-if with waves of 20: %+v\n%s", res.End, fmtDecisions(res.Decisions))
		}
	})

	t.Run("bad settings are refused", func(t *testing.T) {
		bad, zero := 1.5, 0
		if _, err := WhatIf(rec, WhatIfOptions{Gate: &bad}); err == nil || !strings.Contains(err.Error(), "gate 1.5 is out of range") {
			t.Errorf("gate 1.5: %v", err)
		}
		if _, err := WhatIf(rec, WhatIfOptions{WaveSize: &zero}); err == nil || !strings.Contains(err.Error(), "wave size 0") {
			t.Errorf("wave size 0: %v", err)
		}
	})
}

// pauseAt is where a failure policy first trips, by hand.
type pauseAt struct {
	Wave                     int
	At                       time.Time
	Sent                     int
	failed, timedOut, online int
}

// expectPause counts, from the recording alone and without the decision
// code, where a failure policy of maxFailure (the job's MinFinished) first
// trips. Up to that point a what-if with that policy makes the recorded
// decisions, so the recorded sends and wave times hold: walk the waves in
// order and, within the time each was open in the recording, the instants
// a device of it finished or timed out; at each, count the wave's devices
// completed, failed (their final report by then) and timed out (no final
// report by then, and more than the device timeout since their desired
// state). It trips when at least MinFinished finished and more than
// maxFailure of the wave failed or timed out (no device of the scenario
// is offline: all of a wave's devices are online). The pause comes at the
// driver's first tick at or after that instant (the scenario's ticks are
// every step from the first wave's start), before that tick's sends.
func expectPause(t *testing.T, rec *Recording, maxFailure float64, step time.Duration) pauseAt {
	t.Helper()
	spec, err := rec.Spec()
	if err != nil {
		t.Fatal(err)
	}
	plan, _, err := rec.plan()
	if err != nil {
		t.Fatal(err)
	}
	type dev struct {
		sent, final time.Time
		status      string
	}
	devs := map[events.DeviceRef]*dev{}
	for _, e := range rec.Shadow {
		switch e.Event.Type {
		case events.TypeShadowDesired:
			var d events.ShadowDesiredData
			if e.Event.DecodeData(&d) == nil && d.JobID == rec.JobID {
				ref := events.DeviceRef{TypeID: d.TypeID, DeviceID: d.DeviceID}
				if devs[ref] == nil {
					devs[ref] = &dev{sent: e.Event.Time}
				}
			}
		case events.TypeShadowReported:
			var d events.ShadowReportedData
			ref := events.DeviceRef{}
			if e.Event.DecodeData(&d) == nil {
				ref = events.DeviceRef{TypeID: d.TypeID, DeviceID: d.DeviceID}
			}
			if x := devs[ref]; x != nil && x.final.IsZero() && (d.Firmware.Status == events.StatusCompleted || d.Firmware.Status == events.StatusFailed) {
				x.final, x.status = e.Event.Time, d.Firmware.Status
			}
		}
	}
	started, completed := map[int]time.Time{}, map[int]time.Time{}
	var first time.Time
	for _, e := range rec.Job {
		var d events.RolloutData
		_ = e.Event.DecodeData(&d)
		switch e.Event.Type {
		case events.TypeRolloutWaveStarted:
			started[d.Wave] = e.Event.Time
			if d.Wave == 1 {
				first = e.Event.Time
			}
		case events.TypeRolloutWaveCompleted:
			completed[d.Wave] = e.Event.Time
		}
	}
	timeout := time.Duration(spec.DeviceTimeout)
	for w, wave := range plan {
		var instants []time.Time
		for _, ref := range wave {
			if x := devs[ref]; x != nil {
				instants = append(instants, x.sent.Add(timeout+time.Nanosecond))
				if !x.final.IsZero() {
					instants = append(instants, x.final)
				}
			}
		}
		var trip time.Time
		var failed, timedOut int
		for _, at := range instants {
			if !at.After(started[w+1]) || at.After(completed[w+1]) || (!trip.IsZero() && !at.Before(trip)) {
				continue
			}
			c, f, to := 0, 0, 0
			for _, ref := range wave {
				x := devs[ref]
				switch {
				case x == nil || x.sent.After(at):
				case !x.final.IsZero() && !x.final.After(at) && x.status == events.StatusCompleted:
					c++
				case !x.final.IsZero() && !x.final.After(at):
					f++
				case at.Sub(x.sent) > timeout:
					to++
				}
			}
			if c+f+to >= spec.MinFinished && float64(f+to)/float64(len(wave)) > maxFailure {
				trip, failed, timedOut = at, f, to
			}
		}
		if trip.IsZero() {
			continue
		}
		ticks := (trip.Sub(first) + step - 1) / step
		at := first.Add(ticks * step)
		sent := 0
		for _, x := range devs {
			if x.sent.Before(at) {
				sent++
			}
		}
		return pauseAt{Wave: w + 1, At: at, Sent: sent, failed: failed, timedOut: timedOut, online: len(wave)}
	}
	return pauseAt{}
}
