package rollout

import (
	"strings"
	"testing"
	"time"

	"github.com/otawatch/otawatch/events"
	"github.com/otawatch/otawatch/services/internal/testutil"
	"github.com/otawatch/otawatch/services/simulator"
)

// withData returns a copy of e with its data changed by change.
func withData(t *testing.T, e Recorded, change func(d *events.RolloutData)) Recorded {
	t.Helper()
	var d events.RolloutData
	if err := e.Event.DecodeData(&d); err != nil {
		t.Fatal(err)
	}
	change(&d)
	ne, err := events.New(e.Event.ID, e.Event.Source, e.Event.Type, e.Event.Subject, e.Event.Time, d)
	if err != nil {
		t.Fatal(err)
	}
	e.Event = ne
	return e
}

// tampered is a copy of rec whose job events are changed by change.
func tampered(rec *Recording, change func(job []Recorded) []Recorded) *Recording {
	c := *rec
	c.Job = change(append([]Recorded(nil), rec.Job...))
	return &c
}

// firstOf is the index of the job's first event of type typ for wave.
func firstOf(t *testing.T, job []Recorded, typ string, wave int) int {
	t.Helper()
	for i, e := range job {
		var d events.RolloutData
		if e.Event.Type == typ && e.Event.DecodeData(&d) == nil && d.Wave == wave {
			return i
		}
	}
	t.Fatalf("no %s of wave %d in the recording", events.RolloutEventName(typ), wave)
	return -1
}

func checkNoDifference(t *testing.T, res *ReplayResult) {
	t.Helper()
	for _, d := range res.Differences {
		t.Errorf("difference at seq %d (%s): %s", d.Seq, d.At.Format(time.RFC3339Nano), d.What)
	}
	for _, c := range res.Decisions {
		if !c.Same {
			t.Errorf("decision %s not matched", describe(c.Recorded))
		}
	}
}

// TestReplayOnSteppedRecording: the stepped recording (every tick known)
// replays without a difference; a wave_gated whose counts were changed,
// and a recording missing its last decision, are each named.
func TestReplayOnSteppedRecording(t *testing.T) {
	st, spec := steppedScenario(t)
	rec := st.readRecording(spec.ID)
	// The fake clock runs ahead of the wall clock: check up to its end.
	rec.ReadAt = st.clock.Now().Add(time.Minute)

	res, err := Replay(rec, ReplayOptions{Tick: st.step})
	if err != nil {
		t.Fatal(err)
	}
	checkNoDifference(t, res)
	// 9 ticks decided: wave 1 started; each wave gated; each completed
	// with the next started (or the job completed).
	if len(res.Decisions) != 9 || res.Status != events.RolloutCompleted || res.ShadowEvents == 0 {
		t.Errorf("%d decisions, status %s, %d SHADOW events; want 9, completed, some", len(res.Decisions), res.Status, res.ShadowEvents)
	}

	t.Run("changed gate counts", func(t *testing.T) {
		var seq uint64
		bad := tampered(rec, func(job []Recorded) []Recorded {
			i := firstOf(t, job, events.TypeRolloutWaveGated, 2)
			seq = job[i].Seq
			job[i] = withData(t, job[i], func(d *events.RolloutData) { d.Progress.Completed++; d.Gate.Completed++ })
			return job
		})
		res, err := Replay(bad, ReplayOptions{Tick: st.step})
		if err != nil {
			t.Fatal(err)
		}
		if len(res.Differences) == 0 || res.Differences[0].Seq != seq || !strings.Contains(res.Differences[0].What, "recorded wave_gated wave 2") ||
			!strings.Contains(res.Differences[0].What, "first differing field of wave_gated: gate.completed, recorded 9, derived 8") {
			t.Fatalf("differences %+v; want the first at seq %d, the changed wave_gated", res.Differences, seq)
		}
	})

	t.Run("missing last decision", func(t *testing.T) {
		bad := tampered(rec, func(job []Recorded) []Recorded {
			i := firstOf(t, job, events.TypeRolloutWaveCompleted, 4)
			return job[:i]
		})
		res, err := Replay(bad, ReplayOptions{Tick: st.step})
		if err != nil {
			t.Fatal(err)
		}
		if len(res.Differences) != 1 || res.Differences[0].Seq != 0 || !strings.Contains(res.Differences[0].What, "wave_completed wave 4") ||
			!strings.Contains(res.Differences[0].What, "the recording never has it") {
			t.Fatalf("differences %+v; want one: wave 4's completion missing", res.Differences)
		}
	})
}

// TestReplaySimulatedFleetRollout: a rollout over a simulated fleet in
// real time (installs of ~127 s device time at time scale 1000, 8% of
// devices failing) replays without a difference, though the ticks and the
// fold's lag were the live run's; a wave_gated whose counts were changed
// is named.
func TestReplaySimulatedFleetRollout(t *testing.T) {
	const devices = 200
	r := newBareRig(t)
	f := r.startFleet(simulator.FleetConfig{Devices: devices, TimeScale: 1000, FailureRate: 0.08, Seed: 5})
	cfg := testConfig(r.broker)
	r.start("a", cfg, nil)
	spec := fleetSpec("replay", f, simulator.DefaultType)
	spec.WaveSize, spec.Gate, spec.MaxFailure, spec.MinFinished = 40, 0.8, 0.25, 10
	spec.Rate, spec.Soak = 400, events.Duration(300*time.Millisecond)
	spec.DeviceTimeout = events.Duration(10 * time.Second)
	r.mustRequest(CmdCreate, events.RolloutRequest{Start: true, Spec: spec})
	job := r.waitStatus("replay", 120*time.Second, events.RolloutCompleted, events.RolloutPaused, events.RolloutAborted)
	if job.Status != events.RolloutCompleted {
		t.Fatalf("job %s: %s", job.Status, job.Reason)
	}
	testutil.Eventually(t, 30*time.Second, func() bool { return f.Stats().Completed+f.Stats().Failed == devices },
		"not every device finished: %+v", f.Stats())

	ctx := t.Context()
	rec, err := ReadRecording(ctx, r.js.JS, "replay", ReadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	res, err := Replay(rec, ReplayOptions{Tick: cfg.Tick})
	if err != nil {
		t.Fatal(err)
	}
	checkNoDifference(t, res)
	if len(res.Decisions) < 11 || res.Status != events.RolloutCompleted {
		t.Errorf("%d decisions, status %s; want at least 11 (5 waves), completed", len(res.Decisions), res.Status)
	}

	var seq uint64
	bad := tampered(rec, func(job []Recorded) []Recorded {
		i := firstOf(t, job, events.TypeRolloutWaveGated, 3)
		seq = job[i].Seq
		job[i] = withData(t, job[i], func(d *events.RolloutData) { d.Progress.Completed--; d.Progress.Pending++ })
		return job
	})
	if res, err = Replay(bad, ReplayOptions{Tick: cfg.Tick}); err != nil {
		t.Fatal(err)
	}
	if len(res.Differences) == 0 || res.Differences[0].Seq != seq {
		t.Fatalf("differences %+v; want the first at seq %d (wave 3's changed wave_gated)", res.Differences, seq)
	}
}
