package rollout

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/otawatch/otawatch/events"
	"github.com/otawatch/otawatch/services/internal/fleet"
)

// A synthetic recording, built without a server: n devices that were all
// sent the desired state at once and answered in_progress after a second
// and completed (every failEvery-th: failed) 20-60 s later. Its job has no
// decisions: it is input for a what-if, whose run, written down as a
// recording (whatIfRecording), is a job's log as the driver would have
// written it.
func syntheticInput(t testing.TB, n, waveSize, failEvery int) *Recording {
	t.Helper()
	t0 := time.Date(2026, 3, 3, 9, 0, 0, 0, time.UTC)
	const job = "synth"
	spec := events.RolloutSpec{ID: job, Target: target(), DeviceType: "sensor", WaveSize: waveSize, Gate: 0.9, MaxFailure: 0.1, MinFinished: 10,
		OnFailure: events.OnFailurePause, Rate: 1000, DeviceTimeout: events.Duration(30 * time.Minute)}
	var refs []events.DeviceRef
	for i := 1; i <= n; i++ {
		refs = append(refs, events.DeviceRef{TypeID: "sensor", DeviceID: deviceID(i)})
	}
	rec := &Recording{JobID: job, ReadAt: t0.Add(24 * time.Hour)}
	var seq uint64
	add := func(list *[]Recorded, at time.Time, typ, subject string, data any) {
		t.Helper()
		seq++
		e, err := events.New(fmt.Sprintf("e%d", seq), events.SourceRollout, typ, "", at, data)
		if err != nil {
			t.Fatal(err)
		}
		*list = append(*list, Recorded{Seq: seq, Stored: at, Subject: subject, Event: e})
	}
	add(&rec.Job, t0, events.TypeRolloutJobCreated, events.RolloutSubject(job, "job_created"), events.RolloutData{JobID: job, Spec: &spec})
	add(&rec.Job, t0, events.TypeRolloutJobStarted, events.RolloutSubject(job, "job_started"),
		events.RolloutData{JobID: job, Plan: &events.RolloutPlan{Waves: SplitWaves(refs, 0, waveSize)}})
	for i, ref := range refs {
		add(&rec.Shadow, t0, events.TypeShadowDesired, events.ShadowDesiredSubject(ref.TypeID, ref.DeviceID),
			events.ShadowDesiredData{TypeID: ref.TypeID, DeviceID: ref.DeviceID, JobID: job, Wave: 1, Firmware: spec.Target})
		report := func(at time.Time, status string) {
			fw := events.Firmware{Version: spec.Target.Version, Timestamp: at, Status: status}
			add(&rec.Shadow, at, events.TypeShadowReported, events.ShadowReportedSubject(ref.TypeID, ref.DeviceID),
				events.ShadowReportedData{TypeID: ref.TypeID, DeviceID: ref.DeviceID, Firmware: fw})
		}
		report(t0.Add(time.Second), events.StatusInProgress)
		final := events.StatusCompleted
		if (i+1)%failEvery == 0 {
			final = events.StatusFailed
		}
		report(t0.Add(20*time.Second+time.Duration((i*7919)%40_000)*time.Millisecond), final)
	}
	if err := rec.SetBase(fleet.New()); err != nil {
		t.Fatal(err)
	}
	return rec
}

// whatIfRecording runs a what-if and writes its run down as a recording:
// every event it folded, in the order it folded them, each stored at its
// time (or just after the one before).
func whatIfRecording(t testing.TB, in *Recording, o WhatIfOptions) (*Recording, *WhatIfResult) {
	t.Helper()
	out := &Recording{JobID: in.JobID, ReadAt: in.ReadAt}
	var stored time.Time
	var seqs = map[string]uint64{}
	o.record = func(stream string, at time.Time, e events.Event) {
		if !at.After(stored) {
			at = stored.Add(time.Nanosecond)
		}
		stored = at
		seqs[stream]++
		r := Recorded{Seq: seqs[stream], Stored: at, Event: e}
		if stream == events.StreamRollout {
			r.Subject = events.RolloutSubject(in.JobID, events.RolloutEventName(e.Type))
			out.Job = append(out.Job, r)
			return
		}
		var d struct{ TypeID, DeviceID string }
		_ = e.DecodeData(&d)
		r.Subject = events.ShadowReportedSubject(d.TypeID, d.DeviceID)
		if e.Type == events.TypeShadowDesired {
			r.Subject = events.ShadowDesiredSubject(d.TypeID, d.DeviceID)
		}
		out.Shadow = append(out.Shadow, r)
	}
	res, err := WhatIf(in, o)
	if err != nil {
		t.Fatal(err)
	}
	if err := out.SetBase(fleet.New()); err != nil {
		t.Fatal(err)
	}
	return out, res
}

// TestWhatIfRunReplays: the two engines agree. A what-if's run, written
// down as the log the driver would have written, replays without a
// difference, and a what-if of it with its own settings makes the same
// decisions; a run with a change no replay can explain (its decisions
// made under a stricter policy, the recorded spec left as it was) is a
// difference.
func TestWhatIfRunReplays(t *testing.T) {
	in := syntheticInput(t, 2000, 200, 25)
	run, res := whatIfRecording(t, in, WhatIfOptions{})
	if res.End.Status != events.RolloutCompleted || len(res.Decisions) != 31 {
		t.Fatalf("the synthetic run: %+v, %d decisions; want completed, 10 waves", res.End, len(res.Decisions))
	}
	rep, err := Replay(run, ReplayOptions{})
	if err != nil {
		t.Fatal(err)
	}
	checkNoDifference(t, rep)
	if len(rep.Decisions) != 11 {
		t.Errorf("%d ticks decided, want 11 (wave 1 started; then, without a soak, each wave's gate, completion and the next start at one tick)", len(rep.Decisions))
	}
	again, err := WhatIf(run, WhatIfOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if !again.Reproduces {
		t.Errorf("a what-if of the run does not reproduce it: %s", again.Difference)
	}

	// Every 25th device fails: 4% of a wave. With at most 3% the run
	// pauses in wave 1; written under the recorded (lax) spec, its pause
	// is not what the decision code gives.
	strict := 0.03
	run, res = whatIfRecording(t, in, WhatIfOptions{MaxFailure: &strict})
	if res.End.Status != events.RolloutPaused {
		t.Fatalf("strict run: %+v", res.End)
	}
	for i, e := range run.Job {
		if e.Event.Type == events.TypeRolloutJobCreated {
			lax := withData(t, e, func(d *events.RolloutData) { d.Spec.MaxFailure = 0.1 })
			run.Job[i] = lax
		}
	}
	if rep, err = Replay(run, ReplayOptions{}); err != nil {
		t.Fatal(err)
	}
	if len(rep.Differences) == 0 || !strings.Contains(rep.Differences[0].What, "recorded job_paused wave 1") {
		t.Errorf("differences %+v; want the pause named", rep.Differences)
	}
}

// BenchmarkReplay replays a job of 10,000 devices in 15 waves (30,000
// SHADOW events of the job), as written by a what-if run.
func BenchmarkReplay(b *testing.B) {
	run, _ := whatIfRecording(b, syntheticInput(b, 10_000, 667, 25), WhatIfOptions{})
	b.ResetTimer()
	for b.Loop() {
		res, err := Replay(run, ReplayOptions{})
		if err != nil || len(res.Differences) > 0 {
			b.Fatalf("%v %+v", err, res.Differences)
		}
	}
	b.ReportMetric(float64(len(run.Shadow)+len(run.Job))*float64(b.N)/b.Elapsed().Seconds(), "events/s")
}

// BenchmarkWhatIf runs a what-if of a job of 10,000 devices in 15 waves
// with a stricter gate.
func BenchmarkWhatIf(b *testing.B) {
	in := syntheticInput(b, 10_000, 667, 25)
	gate := 0.95
	b.ResetTimer()
	for b.Loop() {
		res, err := WhatIf(in, WhatIfOptions{Gate: &gate})
		if err != nil || res.End.Status != events.RolloutCompleted {
			b.Fatalf("%v %+v", err, res.End)
		}
	}
	b.ReportMetric(float64(len(in.Shadow))*float64(b.N)/b.Elapsed().Seconds(), "events/s")
}

// TestWhatIfStopsAtDevicesNeverSent: a recorded job that paused in wave 1
// holds nothing of what wave 2's devices would do; a what-if that passes
// wave 1 stops where wave 2 would start, and says why.
func TestWhatIfStopsAtDevicesNeverSent(t *testing.T) {
	strict := 0.03
	paused, res := whatIfRecording(t, syntheticInput(t, 1000, 200, 25), WhatIfOptions{MaxFailure: &strict})
	if res.End.Status != events.RolloutPaused || res.End.Wave != 1 {
		t.Fatalf("the recorded job: %+v; want paused in wave 1", res.End)
	}
	lax := 0.1
	res, err := WhatIf(paused, WhatIfOptions{MaxFailure: &lax})
	if err != nil {
		t.Fatal(err)
	}
	if res.End.Status != "unknown" || res.End.Wave != 2 || res.End.Sent != 200 ||
		!strings.Contains(res.End.Reason, "the recording never sent 200 of its 200 devices their desired state") {
		t.Errorf("what-if: %+v; want it to stop where wave 2 would start, 200 sent", res.End)
	}
	if res.ActualEnd.Status != events.RolloutPaused || res.ActualEnd.Wave != 1 {
		t.Errorf("actual end %+v; want the recorded pause in wave 1", res.ActualEnd)
	}
}
