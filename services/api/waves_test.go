package api

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/otawatch/otawatch/events"
)

// rollout stores a ROLLOUT event of the job named in d (name is the
// subject's last token: "job_started") and returns its sequence.
func (h *harness) rollout(t *testing.T, name string, d events.RolloutData, at time.Time) uint64 {
	t.Helper()
	typ := "io.otawatch.rollout." + name + ".v1"
	e, err := events.New(events.IdentityID("ro", d.JobID, name, at.String()), events.SourceRollout, typ, d.JobID, at, d)
	if err != nil {
		t.Fatal(err)
	}
	return h.publish(t, events.RolloutSubject(d.JobID, name), e)
}

// startJob stores job_created and job_started of a job over plan, with a
// device timeout.
func (h *harness) startJob(t *testing.T, job string, timeout time.Duration, plan [][]events.DeviceRef, at time.Time) {
	t.Helper()
	spec := events.RolloutSpec{ID: job, Target: events.DesiredFirmware{Version: "2.0", Checksum: "sha256:2.0", URL: "https://fw.example/2.0"},
		Gate: 0.9, DeviceTimeout: events.Duration(timeout)}
	h.rollout(t, "job_created", events.RolloutData{JobID: job, Spec: &spec}, at)
	h.rollout(t, "job_started", events.RolloutData{JobID: job, Plan: &events.RolloutPlan{Waves: plan}}, at)
}

func refs(typeID string, ids ...string) []events.DeviceRef {
	out := make([]events.DeviceRef, len(ids))
	for i, id := range ids {
		out[i] = events.DeviceRef{TypeID: typeID, DeviceID: id}
	}
	return out
}

// TestDashboardWavesFollowThePlan: the dashboard's waves are the plan's,
// each device in one state, so every wave's states add up to its size in
// the plan from the moment the job starts: a wave whose devices were not
// all sent yet counts the rest as queued (it used to show only the devices
// sent a desired state as targeted), a wave not started shows all its
// devices queued, and a device that completed and then went silent is
// completed, not also offline (it used to count in both, so a finished
// wave showed as many offline as completed).
func TestDashboardWavesFollowThePlan(t *testing.T) {
	h := startAPI(t, harnessOpts{})
	w1 := refs("sensor", "a1", "a2", "a3", "a4", "a5", "a6")
	w2 := refs("sensor", "b1", "b2", "b3")
	// No device timeout: the events are dated t0 and the dashboard's
	// clock is the wall clock (TestDashboardWavesTimeOut has one).
	h.startJob(t, "job1", 0, [][]events.DeviceRef{w1, w2}, t0)
	h.rollout(t, "wave_started", events.RolloutData{JobID: "job1", Wave: 1}, t0)
	// a6 is never sent (the send is still queued); the others are.
	for _, r := range w1[:5] {
		h.desire(t, r.TypeID, r.DeviceID, "job1", 1, "2.0", t0)
	}
	h.rollout(t, "devices_sent", events.RolloutData{JobID: "job1", Devices: w1[:5]}, t0)
	at := t0.Add(time.Minute)
	h.report(t, "sensor", "a1", "2.0", events.StatusCompleted, 40, at)
	h.report(t, "sensor", "a2", "1.0", events.StatusFailed, 5, at)
	h.report(t, "sensor", "a3", "1.0", events.StatusInProgress, 0, at)
	// a4 had reported before the job and went silent after its desired
	// state: potentially offline. a1 finished and went silent: idle, and
	// still completed (the presence guess names it too here, as the
	// alerting service did before idle devices were told apart).
	h.report(t, "sensor", "a4", "1.0", events.StatusCompleted, 30, t0.Add(-time.Hour))
	h.presence(t, "sensor", "a4", events.PresencePotentiallyOffline, t0.Add(-time.Hour), t0.Add(11*time.Minute))
	last := h.presence(t, "sensor", "a1", events.PresencePotentiallyOffline, at, t0.Add(11*time.Minute))
	h.waitShadow(t, last)

	want := []waveRow{
		{JobID: "job1", Wave: 1, WaveProgress: events.WaveProgress{Targeted: 6, Queued: 1, Pending: 1, InProgress: 1, Completed: 1, Failed: 1, Offline: 1}},
		{JobID: "job1", Wave: 2, WaveProgress: events.WaveProgress{Targeted: 3, Queued: 3}},
	}
	var got []waveRow
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		h.svc.model.mu.RLock()
		got = h.svc.model.waveRows(time.Now())
		h.svc.model.mu.RUnlock()
		if len(got) == len(want) && got[0].WaveProgress == want[0].WaveProgress && got[1].WaveProgress == want[1].WaveProgress {
			break
		}
	}
	if len(got) != len(want) {
		t.Fatalf("waves %+v, want %+v", got, want)
	}
	for i := range want {
		if got[i].JobID != want[i].JobID || got[i].Wave != want[i].Wave || got[i].WaveProgress != want[i].WaveProgress {
			t.Errorf("wave %d: %+v, want %+v", i+1, got[i].WaveProgress, want[i].WaveProgress)
		}
		if sum := statesSum(got[i].WaveProgress); sum != got[i].Targeted {
			t.Errorf("wave %d: states add up to %d, targeted %d", i+1, sum, got[i].Targeted)
		}
	}
	if got[0].Progress != 1.0/6 || got[0].SuccessRate != 0.5 {
		t.Errorf("wave 1 progress %g, success rate %g; want 1/6, 0.5", got[0].Progress, got[0].SuccessRate)
	}

	// The WebSocket push carries the same rows under the field names the
	// page reads.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(h.base, "http")+"/api/v1/ws", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseNow()
	s := readSnapshot(t, ctx, c)
	for s.Seq < last {
		s = readSnapshot(t, ctx, c)
	}
	if len(s.Waves) != 2 || s.Waves[0].WaveProgress != want[0].WaveProgress || s.Waves[1].WaveProgress != want[1].WaveProgress {
		t.Errorf("pushed waves %+v, want %+v", s.Waves, want)
	}
}

// TestDashboardWavesTimeOut: a device sent its desired state and silent
// past the job's device timeout counts as timed out (the clock is the
// wall clock: the events are dated a day back).
func TestDashboardWavesTimeOut(t *testing.T) {
	h := startAPI(t, harnessOpts{})
	day := time.Now().Add(-24 * time.Hour).UTC().Truncate(time.Second)
	w1 := refs("sensor", "a1", "a2")
	h.startJob(t, "job1", time.Hour, [][]events.DeviceRef{w1}, day)
	h.desire(t, "sensor", "a1", "job1", 1, "2.0", day)
	h.desire(t, "sensor", "a2", "job1", 1, "2.0", day)
	h.rollout(t, "devices_sent", events.RolloutData{JobID: "job1", Devices: w1}, day)
	last := h.report(t, "sensor", "a1", "2.0", events.StatusCompleted, 40, day.Add(time.Minute))
	h.waitShadow(t, last)
	want := events.WaveProgress{Targeted: 2, Completed: 1, TimedOut: 1}
	var got []waveRow
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		h.svc.model.mu.RLock()
		got = h.svc.model.waveRows(time.Now())
		h.svc.model.mu.RUnlock()
		if len(got) == 1 && got[0].WaveProgress == want {
			break
		}
	}
	if len(got) != 1 || got[0].WaveProgress != want {
		t.Errorf("waves %+v, want one wave %+v", got, want)
	}
}

// statesSum adds a progress's exclusive states.
func statesSum(p events.WaveProgress) int {
	return p.Queued + p.Pending + p.InProgress + p.Completed + p.Failed + p.TimedOut + p.Offline
}
