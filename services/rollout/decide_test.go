package rollout

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/otawatch/otawatch/events"
	"github.com/otawatch/otawatch/services/internal/fleet"
)

var t0 = time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)

func at(d time.Duration) time.Time { return t0.Add(d) }

// harness drives a job's pure logic with a real fleet fold: commands and
// Decide produce pending events, which it turns into envelopes and folds,
// and it plays the sender and the devices by applying SHADOW events. Time
// is whatever each step says: the fake clock.
type harness struct {
	t     *testing.T
	job   *Job
	fleet *fleet.State
	jobs  map[string]*Job
	seq   uint64 // ROLLOUT
	fseq  uint64 // SHADOW
	ctx   CommandContext
}

func testSpec(devices int) events.RolloutSpec {
	s := events.RolloutSpec{
		ID:     "job1",
		Target: events.DesiredFirmware{Version: "2.0.0", Checksum: "sha256:" + strings.Repeat("aa", 32), URL: "https://fw/2.0.0"},
	}
	for i := 1; i <= devices; i++ {
		s.Devices = append(s.Devices, fmt.Sprintf("t/d%02d", i))
	}
	return s
}

func newHarness(t *testing.T, spec events.RolloutSpec) *harness {
	t.Helper()
	var def Config
	def.SetDefaults()
	h := &harness{t: t, fleet: fleet.New(), jobs: map[string]*Job{}}
	h.ctx = CommandContext{Fleet: h.fleet, Jobs: h.jobs, Defaults: def}
	// Every device has reported its old firmware once: it is known and online.
	for _, d := range spec.Devices {
		ref, _ := events.ParseDeviceRef(d)
		if ref.TypeID != "" {
			h.report(ref.DeviceID, "1.0.0", events.StatusCompleted, at(-time.Hour))
		}
	}
	if err := h.cmd(CmdCreate, events.RolloutRequest{Spec: &spec}, at(0)); err != nil {
		t.Fatalf("create: %v", err)
	}
	return h
}

func (h *harness) fold(p []Pending, now time.Time) {
	h.t.Helper()
	for _, pe := range p {
		e, err := events.New(fmt.Sprintf("e%d", h.seq+1), events.SourceRollout, pe.Type, pe.Data.JobID, now, pe.Data)
		if err != nil {
			h.t.Fatal(err)
		}
		h.seq++
		j, err := Apply(h.job, h.seq, e)
		if err != nil {
			h.t.Fatalf("apply %s: %v", pe.Type, err)
		}
		h.job = j
		h.jobs[j.ID] = j
	}
}

func (h *harness) cmd(cmd string, req events.RolloutRequest, now time.Time) error {
	h.t.Helper()
	h.ctx.Now = now
	if req.JobID == "" && h.job != nil {
		req.JobID = h.job.ID
	}
	p, err := Command(h.job, cmd, req, h.ctx)
	if err != nil {
		return err
	}
	h.fold(p, now)
	return nil
}

func (h *harness) mustCmd(cmd string, now time.Time) {
	h.t.Helper()
	if err := h.cmd(cmd, events.RolloutRequest{}, now); err != nil {
		h.t.Fatalf("%s: %v", cmd, err)
	}
}

// decide runs Decide at now, folds its events and returns their names.
func (h *harness) decide(now time.Time) []string {
	h.t.Helper()
	p := Decide(h.job, h.fleet, now, nil)
	h.fold(p, now)
	var names []string
	for _, pe := range p {
		names = append(names, events.RolloutEventName(pe.Type))
	}
	return names
}

// send plays the sender: every due device gets its desired event (SHADOW)
// and a devices_sent mark.
func (h *harness) send(now time.Time) int { return h.sendN(now, 1<<20) }

func (h *harness) sendN(now time.Time, n int) int {
	h.t.Helper()
	due := h.job.Due(n)
	for _, d := range due {
		e, err := events.New(desiredEventID(h.job.ID, d.Ref, h.job.Spec.Target.Version, d.Attempt), events.SourceRollout,
			events.TypeShadowDesired, d.Ref.String(), now, events.ShadowDesiredData{TypeID: d.Ref.TypeID, DeviceID: d.Ref.DeviceID,
				JobID: h.job.ID, Wave: d.Wave, Firmware: h.job.Spec.Target, Attempt: d.Attempt})
		if err != nil {
			h.t.Fatal(err)
		}
		h.fseq++
		if _, err := h.fleet.Apply(h.fseq, e); err != nil {
			h.t.Fatal(err)
		}
		h.fold([]Pending{{events.TypeRolloutDevicesSent, events.RolloutData{JobID: h.job.ID, Devices: []events.DeviceRef{d.Ref}, Attempt: d.Attempt}}}, now)
	}
	return len(due)
}

func (h *harness) report(dev, version, status string, now time.Time) {
	h.t.Helper()
	fw := events.Firmware{Version: version, Status: status, Timestamp: now}
	if status == events.StatusFailed {
		code := "E_FLASH_WRITE"
		fw.ErrorCode = &code
	}
	e, err := events.New(events.ReportEventID("t", dev, fw), events.SourceBridge, events.TypeShadowReported, dev, now,
		events.ShadowReportedData{TypeID: "t", DeviceID: dev, Firmware: fw})
	if err != nil {
		h.t.Fatal(err)
	}
	h.fseq++
	if _, err := h.fleet.Apply(h.fseq, e); err != nil {
		h.t.Fatal(err)
	}
}

func (h *harness) offline(dev string, now time.Time) {
	h.t.Helper()
	d, _ := h.fleet.Device("t", dev)
	e, err := events.New("p-"+dev, events.SourceAlerting, events.TypeDevicePresence, dev, now,
		events.DevicePresenceData{TypeID: "t", DeviceID: dev, State: events.PresencePotentiallyOffline, LastSeen: d.LastSeen})
	if err != nil {
		h.t.Fatal(err)
	}
	h.fseq++
	if _, err := h.fleet.Apply(h.fseq, e); err != nil {
		h.t.Fatal(err)
	}
}

// wave reports status for n devices of the given wave (in plan order,
// skipping the first skip).
func (h *harness) wave(w, skip, n int, status string, now time.Time) {
	h.t.Helper()
	version := h.job.Spec.Target.Version
	if status == events.StatusFailed {
		version = "1.0.0"
	}
	for _, ref := range h.job.Plan[w-1][skip : skip+n] {
		h.report(ref.DeviceID, version, status, now)
	}
}

func names(s ...string) string { return strings.Join(s, ",") }

func TestDecide(t *testing.T) {
	type step struct {
		at   time.Duration
		do   func(h *harness, now time.Time)
		want string // the events Decide appends at this step, comma-separated
	}
	tests := []struct {
		name   string
		spec   func(s *events.RolloutSpec)
		steps  []step
		status string // final job status
		reason string // substring of the final job's reason
	}{
		{
			name: "gate passes at 90% and the waves advance to completion",
			spec: func(s *events.RolloutSpec) { s.WaveSize = 10 },
			steps: []step{
				{0, nil, "wave_started"},
				{time.Second, func(h *harness, now time.Time) { h.send(now) }, ""},
				{time.Minute, func(h *harness, now time.Time) { h.wave(1, 0, 8, events.StatusCompleted, now) }, ""},
				{2 * time.Minute, func(h *harness, now time.Time) { h.wave(1, 8, 1, events.StatusCompleted, now) }, "wave_gated,wave_completed,wave_started"},
				{3 * time.Minute, func(h *harness, now time.Time) { h.send(now); h.wave(2, 0, 10, events.StatusCompleted, now) }, "wave_gated,wave_completed,job_completed"},
			},
			status: events.RolloutCompleted,
		},
		{
			name: "queued devices hold the gate although the sent ones completed",
			spec: func(s *events.RolloutSpec) { s.WaveSize = 10; s.Gate = 0.5 },
			steps: []step{
				{0, nil, "wave_started"},
				{time.Second, func(h *harness, now time.Time) { h.sendN(now, 5) }, ""},
				{time.Minute, func(h *harness, now time.Time) { h.wave(1, 0, 5, events.StatusCompleted, now) }, ""},
				{2 * time.Minute, func(h *harness, now time.Time) { h.send(now) }, "wave_gated,wave_completed,wave_started"},
			},
			status: events.RolloutRunning,
		},
		{
			name: "offline devices that never started leave the gate's denominator",
			spec: func(s *events.RolloutSpec) { s.WaveSize = 10 },
			steps: []step{
				{0, nil, "wave_started"},
				{time.Second, func(h *harness, now time.Time) {
					h.send(now)
					h.offline(h.job.Plan[0][8].DeviceID, now)
					h.offline(h.job.Plan[0][9].DeviceID, now)
				}, ""},
				{time.Minute, func(h *harness, now time.Time) { h.wave(1, 0, 7, events.StatusCompleted, now) }, ""},
				{2 * time.Minute, func(h *harness, now time.Time) { h.wave(1, 7, 1, events.StatusCompleted, now) }, "wave_gated,wave_completed,wave_started"},
			},
			status: events.RolloutRunning,
		},
		{
			name: "a device that went silent mid-update stays in the gate and times out",
			spec: func(s *events.RolloutSpec) {
				s.WaveSize = 10
				s.DeviceTimeout = events.Duration(10 * time.Minute)
				s.MinFinished = 10
			},
			steps: []step{
				{0, nil, "wave_started"},
				{time.Second, func(h *harness, now time.Time) { h.send(now) }, ""},
				{time.Minute, func(h *harness, now time.Time) {
					h.wave(1, 0, 8, events.StatusCompleted, now)
					h.wave(1, 8, 2, events.StatusInProgress, now)
					h.offline(h.job.Plan[0][8].DeviceID, now)
					h.offline(h.job.Plan[0][9].DeviceID, now)
				}, ""},
				// 8 of 10 online completed: the gate (9) does not pass, and at
				// 11 min the two time out: 2 of 10 finished is 20% > 10%.
				{11 * time.Minute, nil, "job_paused"},
			},
			status: events.RolloutPaused,
			reason: "0 failed and 2 timed out of 10 online devices",
		},
		{
			name: "failure policy pauses a wave with a high failure rate",
			spec: func(s *events.RolloutSpec) { s.WaveSize = 20; s.MinFinished = 10; s.MaxFailure = 0.15 },
			steps: []step{
				{0, nil, "wave_started"},
				{time.Second, func(h *harness, now time.Time) { h.send(now) }, ""},
				{time.Minute, func(h *harness, now time.Time) {
					h.wave(1, 0, 5, events.StatusFailed, now)
				}, ""}, // 5 of 20 failed, but 5 finished < 10
				{2 * time.Minute, func(h *harness, now time.Time) { h.wave(1, 5, 4, events.StatusCompleted, now) }, ""},
				{3 * time.Minute, func(h *harness, now time.Time) { h.wave(1, 9, 1, events.StatusCompleted, now) }, "job_paused"},
			},
			status: events.RolloutPaused,
			reason: "wave 1 has 5 failed and 0 timed out of 20 online devices (25.0% > 15%)",
		},
		{
			name: "failure policy aborts when told to",
			spec: func(s *events.RolloutSpec) { s.WaveSize = 20; s.MinFinished = 5; s.OnFailure = events.OnFailureAbort },
			steps: []step{
				{0, nil, "wave_started"},
				{time.Second, func(h *harness, now time.Time) { h.send(now) }, ""},
				{time.Minute, func(h *harness, now time.Time) {
					h.wave(1, 0, 2, events.StatusCompleted, now)
					h.wave(1, 2, 2, events.StatusFailed, now)
				}, ""}, // 2 of 20 is not more than 10%
				{90 * time.Second, func(h *harness, now time.Time) { h.wave(1, 4, 1, events.StatusFailed, now) }, "job_aborted"},
				{2 * time.Minute, func(h *harness, now time.Time) { h.wave(1, 5, 15, events.StatusCompleted, now) }, ""},
			},
			status: events.RolloutAborted,
			reason: "failure policy",
		},
		{
			name: "failures at the threshold do not trip the policy",
			spec: func(s *events.RolloutSpec) { s.WaveSize = 10; s.MinFinished = 10; s.Gate = 0.9 },
			steps: []step{
				{0, nil, "wave_started"},
				{time.Second, func(h *harness, now time.Time) { h.send(now) }, ""},
				{time.Minute, func(h *harness, now time.Time) {
					h.wave(1, 0, 9, events.StatusCompleted, now)
					h.wave(1, 9, 1, events.StatusFailed, now)
				}, "wave_gated,wave_completed,wave_started"},
			},
			status: events.RolloutRunning,
		},
		{
			name: "soak holds a gated wave before the next starts, and the policy still watches it",
			spec: func(s *events.RolloutSpec) { s.WaveSize = 10; s.Soak = events.Duration(30 * time.Minute) },
			steps: []step{
				{0, nil, "wave_started"},
				{time.Second, func(h *harness, now time.Time) { h.send(now) }, ""},
				{time.Minute, func(h *harness, now time.Time) { h.wave(1, 0, 10, events.StatusCompleted, now) }, "wave_gated"},
				{30 * time.Minute, nil, ""},
				{31 * time.Minute, nil, "wave_completed,wave_started"},
			},
			status: events.RolloutRunning,
		},
		{
			name: "a resumed job's paused wave is exempt from the policy but still needs its gate",
			spec: func(s *events.RolloutSpec) { s.WaveSize = 10; s.MinFinished = 5 },
			steps: []step{
				{0, nil, "wave_started"},
				{time.Second, func(h *harness, now time.Time) { h.send(now) }, ""},
				{time.Minute, func(h *harness, now time.Time) {
					h.wave(1, 0, 3, events.StatusCompleted, now)
					h.wave(1, 3, 2, events.StatusFailed, now)
				}, "job_paused"},
				{2 * time.Minute, func(h *harness, now time.Time) { h.mustCmd(CmdResume, now) }, ""},
				{3 * time.Minute, func(h *harness, now time.Time) { h.wave(1, 5, 4, events.StatusCompleted, now) }, ""},
				{4 * time.Minute, func(h *harness, now time.Time) { h.mustCmd(CmdRetryFailed, now); h.send(now) }, ""},
				{5 * time.Minute, func(h *harness, now time.Time) { h.wave(1, 3, 2, events.StatusCompleted, now) }, "wave_gated,wave_completed,wave_started"},
			},
			status: events.RolloutRunning,
		},
		{
			name: "a paused job decides nothing",
			spec: func(s *events.RolloutSpec) { s.WaveSize = 10 },
			steps: []step{
				{0, nil, "wave_started"},
				{time.Second, func(h *harness, now time.Time) { h.send(now); h.mustCmd(CmdPause, now) }, ""},
				{time.Minute, func(h *harness, now time.Time) { h.wave(1, 0, 10, events.StatusCompleted, now) }, ""},
				{2 * time.Minute, func(h *harness, now time.Time) { h.mustCmd(CmdResume, now) }, "wave_gated,wave_completed,wave_started"},
			},
			status: events.RolloutRunning,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			spec := testSpec(20)
			if tt.spec != nil {
				tt.spec(&spec)
			}
			h := newHarness(t, spec)
			h.mustCmd(CmdStart, at(0))
			for i, st := range tt.steps {
				now := at(st.at)
				if st.do != nil {
					st.do(h, now)
				}
				if got := names(h.decide(now)...); got != st.want {
					t.Fatalf("step %d (+%s): decided %q, want %q", i, st.at, got, st.want)
				}
			}
			if h.job.Status != tt.status {
				t.Errorf("status %s, want %s", h.job.Status, tt.status)
			}
			if !strings.Contains(h.job.Reason, tt.reason) {
				t.Errorf("reason %q, want it to contain %q", h.job.Reason, tt.reason)
			}
		})
	}
}

func TestProgressAndTimeouts(t *testing.T) {
	spec := testSpec(10)
	spec.WaveSize = 10
	spec.DeviceTimeout = events.Duration(10 * time.Minute)
	h := newHarness(t, spec)
	h.mustCmd(CmdStart, at(0))
	h.decide(at(0))
	// Send to the first 8 only.
	for _, ref := range h.job.Plan[0][:8] {
		h.fold([]Pending{{events.TypeRolloutDevicesSent, events.RolloutData{JobID: "job1", Devices: []events.DeviceRef{ref}}}}, at(0))
		e, _ := events.New("x"+ref.DeviceID, events.SourceRollout, events.TypeShadowDesired, "", at(0),
			events.ShadowDesiredData{TypeID: "t", DeviceID: ref.DeviceID, JobID: "job1", Wave: 1, Firmware: spec.Target})
		h.fseq++
		if _, err := h.fleet.Apply(h.fseq, e); err != nil {
			t.Fatal(err)
		}
	}
	h.wave(1, 0, 3, events.StatusCompleted, at(time.Minute))
	h.wave(1, 3, 1, events.StatusFailed, at(time.Minute))
	h.wave(1, 4, 2, events.StatusInProgress, at(time.Minute))
	h.offline(h.job.Plan[0][7].DeviceID, at(2*time.Minute))
	tests := []struct {
		name string
		now  time.Duration
		want events.WaveProgress
	}{
		{"before the timeout", 5 * time.Minute,
			events.WaveProgress{Targeted: 10, Queued: 2, Pending: 1, InProgress: 2, Completed: 3, Failed: 1, Offline: 1}},
		{"after the timeout", 11 * time.Minute,
			events.WaveProgress{Targeted: 10, Queued: 2, Completed: 3, Failed: 1, TimedOut: 3, Offline: 1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Progress(h.job, 1, h.fleet, at(tt.now)); got != tt.want {
				t.Errorf("progress\n got %+v\nwant %+v", got, tt.want)
			}
		})
	}
	// retry-failed queues the failed and timed-out devices again, as
	// attempt 1; the late report of a timed-out device still counts.
	if err := h.cmd(CmdRetryFailed, events.RolloutRequest{}, at(11*time.Minute)); err != nil {
		t.Fatal(err)
	}
	due := h.job.Due(100)
	var got []string
	for _, d := range due {
		got = append(got, fmt.Sprintf("%s@%d", d.Ref.DeviceID, d.Attempt))
	}
	// Plan order: d04 failed, d05 d06 d07 timed out (d07 is the pending
	// one), d09 d10 were never sent (attempt 0).
	if want := "d04@1,d05@1,d06@1,d07@1,d09@0,d10@0"; strings.Join(got, ",") != want {
		t.Errorf("due after retry-failed: %s, want %s", strings.Join(got, ","), want)
	}
	h.send(at(12 * time.Minute))
	if p := Progress(h.job, 1, h.fleet, at(12*time.Minute)); p.Pending != 6 || p.Failed != 0 || p.TimedOut != 0 {
		t.Errorf("after the retry's send: %+v, want 6 pending, none failed or timed out", p)
	}
}

func TestCommandsRefused(t *testing.T) {
	states := map[string]func(h *harness){
		events.RolloutCreated: func(h *harness) {},
		events.RolloutRunning: func(h *harness) { h.mustCmd(CmdStart, at(0)) },
		events.RolloutPaused:  func(h *harness) { h.mustCmd(CmdStart, at(0)); h.mustCmd(CmdPause, at(0)) },
		events.RolloutAborted: func(h *harness) { h.mustCmd(CmdAbort, at(0)) },
		events.RolloutCompleted: func(h *harness) {
			h.mustCmd(CmdStart, at(0))
			h.decide(at(0))
			h.send(at(0))
			h.wave(1, 0, 3, events.StatusCompleted, at(time.Minute))
			h.decide(at(time.Minute))
		},
	}
	tests := []struct {
		state, cmd string
		want       string // error; empty: accepted
	}{
		{events.RolloutCreated, CmdCreate, "cannot create job job1: it already exists"},
		{events.RolloutCreated, CmdStart, ""},
		{events.RolloutCreated, CmdPause, "cannot pause job job1: it has not started"},
		{events.RolloutCreated, CmdResume, "cannot resume job job1: it has not started (start it)"},
		{events.RolloutCreated, CmdAbort, ""},
		{events.RolloutCreated, CmdRetryFailed, "cannot retry-failed job job1: it has not started"},
		{events.RolloutRunning, CmdStart, "cannot start job job1: it is already running"},
		{events.RolloutRunning, CmdPause, ""},
		{events.RolloutRunning, CmdResume, "cannot resume job job1: it is running, not paused"},
		{events.RolloutRunning, CmdAbort, ""},
		{events.RolloutRunning, CmdRetryFailed, "cannot retry-failed job job1: no device of its started waves has failed or timed out"},
		{events.RolloutPaused, CmdStart, "cannot start job job1: it is paused (resume it)"},
		{events.RolloutPaused, CmdPause, "cannot pause job job1: it is already paused"},
		{events.RolloutPaused, CmdResume, ""},
		{events.RolloutPaused, CmdAbort, ""},
		{events.RolloutAborted, CmdStart, "cannot start job job1: it is aborted"},
		{events.RolloutAborted, CmdPause, "cannot pause job job1: it is aborted"},
		{events.RolloutAborted, CmdResume, "cannot resume job job1: it is aborted"},
		{events.RolloutAborted, CmdAbort, "cannot abort job job1: it is already aborted"},
		{events.RolloutAborted, CmdRetryFailed, "cannot retry-failed job job1: it is aborted; create a new job for the devices that did not update"},
		{events.RolloutCompleted, CmdStart, "cannot start job job1: it is completed"},
		{events.RolloutCompleted, CmdPause, "cannot pause job job1: it is completed"},
		{events.RolloutCompleted, CmdResume, "cannot resume job job1: it is completed"},
		{events.RolloutCompleted, CmdAbort, "cannot abort job job1: it is completed"},
		{events.RolloutCompleted, CmdRetryFailed, "cannot retry-failed job job1: it is completed; create a new job for the devices that did not update"},
	}
	for _, tt := range tests {
		t.Run(tt.state+"/"+tt.cmd, func(t *testing.T) {
			spec := testSpec(3)
			h := newHarness(t, spec)
			states[tt.state](h)
			if h.job.Status != tt.state {
				t.Fatalf("setup: status %s, want %s", h.job.Status, tt.state)
			}
			req := events.RolloutRequest{}
			if tt.cmd == CmdCreate {
				req.Spec = &spec
			}
			seq := h.seq
			err := h.cmd(tt.cmd, req, at(2*time.Minute))
			switch {
			case tt.want == "" && err != nil:
				t.Fatalf("refused: %v", err)
			case tt.want != "" && err == nil:
				t.Fatalf("accepted, want %q", tt.want)
			case tt.want != "" && err.Error() != tt.want:
				t.Fatalf("error %q, want %q", err, tt.want)
			case tt.want != "":
				var ce *CommandError
				if !errorsAs(err, &ce) || ce.Code != events.RolloutErrConflict {
					t.Errorf("error %v is not a conflict", err)
				}
				if h.seq != seq {
					t.Errorf("a refused command appended events")
				}
			}
		})
	}
	t.Run("unknown job", func(t *testing.T) {
		_, err := Command(nil, CmdPause, events.RolloutRequest{JobID: "nope"}, CommandContext{})
		var ce *CommandError
		if !errorsAs(err, &ce) || ce.Code != events.RolloutErrNotFound || err.Error() != `no rollout job "nope"` {
			t.Errorf("got %v", err)
		}
	})
}

func TestStartRefusals(t *testing.T) {
	tests := []struct {
		name string
		spec func(s *events.RolloutSpec)
		prep func(h *harness)
		want string
	}{
		{"no known device of the type", func(s *events.RolloutSpec) { s.Devices = nil; s.DeviceType = "ghost" }, nil,
			`cannot start job job1: it targets no device (no known device of type "ghost")`},
		{"a bare unknown device id", func(s *events.RolloutSpec) { s.Devices = []string{"zz"} }, nil,
			`cannot start job job1: device "zz" is unknown: name it as typeId/deviceId or give the device type`},
		{"devices of another active job", nil, func(h *harness) {
			other := testSpec(3)
			other.ID = "job0"
			j := newHarness(h.t, other)
			j.mustCmd(CmdStart, at(0))
			h.jobs["job0"] = j.job
		}, "cannot start job job1: devices are in another active job: t/d01 (job job0), t/d02 (job job0), t/d03 (job job0)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			spec := testSpec(3)
			if tt.spec != nil {
				tt.spec(&spec)
			}
			h := newHarness(t, spec)
			if tt.prep != nil {
				tt.prep(h)
			}
			err := h.cmd(CmdStart, events.RolloutRequest{}, at(0))
			if err == nil || err.Error() != tt.want {
				t.Fatalf("got %v, want %q", err, tt.want)
			}
		})
	}
}

func TestApplyIsIdempotentAndResumesAfterACrash(t *testing.T) {
	spec := testSpec(4)
	spec.WaveSize = 2
	h := newHarness(t, spec)
	h.mustCmd(CmdStart, at(0))
	h.decide(at(0))
	// Folding an event again (seq at or below LastSeq) changes nothing.
	before := *h.job
	e, _ := events.New("again", events.SourceRollout, events.TypeRolloutJobPaused, "job1", at(time.Minute), events.RolloutData{JobID: "job1"})
	j, err := Apply(h.job, h.job.LastSeq, e)
	if err != nil || j.Status != before.Status || j.LastSeq != before.LastSeq {
		t.Fatalf("re-applied event changed the job: %v %s %d", err, j.Status, j.LastSeq)
	}
	// A crash after wave_completed and before wave_started: Decide
	// continues with the start.
	h.send(at(time.Second))
	h.wave(1, 0, 2, events.StatusCompleted, at(time.Minute))
	p := Decide(h.job, h.fleet, at(time.Minute), nil)
	if len(p) != 3 {
		t.Fatalf("decided %d events, want 3", len(p))
	}
	h.fold(p[:2], at(time.Minute)) // gated, completed; the start is lost
	if got := names(h.decide(at(2 * time.Minute))...); got != "wave_started" {
		t.Fatalf("after the crash decided %q, want wave_started", got)
	}
	if h.job.Wave != 2 {
		t.Fatalf("wave %d, want 2", h.job.Wave)
	}
}

func TestSplitWaves(t *testing.T) {
	devs := func(n int) []events.DeviceRef {
		out := make([]events.DeviceRef, n)
		for i := range out {
			out[i] = events.DeviceRef{TypeID: "t", DeviceID: fmt.Sprintf("d%04d", i)}
		}
		return out
	}
	tests := []struct {
		name          string
		n, waves, siz int
		want          string
	}{
		{"default: 1500 is 15 waves of 100", 1500, 15, 100, "15x100"},
		{"default: 450 is 5 waves of 90", 450, 15, 100, "90,90,90,90,90"},
		{"default: 3000 is 15 waves of 200", 3000, 15, 100, "15x200"},
		{"wave count only", 10, 3, 0, "4,3,3"},
		{"wave size only", 10, 0, 4, "4,3,3"},
		{"more waves than devices", 2, 5, 0, "1,1"},
		{"empty", 0, 15, 100, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := SplitWaves(devs(tt.n), tt.waves, tt.siz)
			var sizes []string
			total := 0
			for _, x := range w {
				sizes = append(sizes, fmt.Sprint(len(x)))
				total += len(x)
			}
			got := strings.Join(sizes, ",")
			if len(w) > 1 && strings.Count(got, sizes[0]) == len(w) && len(w) > 5 {
				got = fmt.Sprintf("%dx%s", len(w), sizes[0])
			}
			if got != tt.want || total != tt.n {
				t.Errorf("got %s (total %d), want %s", got, total, tt.want)
			}
		})
	}
}

func TestResolveDevicesOrder(t *testing.T) {
	f := fleet.New()
	h := &harness{t: t, fleet: f}
	for _, d := range []string{"c", "a", "b"} {
		h.report(d, "1", events.StatusCompleted, t0)
	}
	got, err := ResolveDevices(events.RolloutSpec{DeviceType: "t", Devices: []string{"b", "x/z", "b"}}, f)
	if err != nil {
		t.Fatal(err)
	}
	var s []string
	for _, r := range got {
		s = append(s, r.String())
	}
	if want := "t/b,x/z,t/a,t/c"; strings.Join(s, ",") != want {
		t.Errorf("got %s, want %s", strings.Join(s, ","), want)
	}
}

func TestNormalizeSpec(t *testing.T) {
	var def Config
	def.SetDefaults()
	spec, err := NormalizeSpec(testSpec(1), def, nil)
	if err != nil {
		t.Fatal(err)
	}
	if spec.Waves != 15 || spec.WaveSize != 100 || spec.Gate != 0.9 || spec.MaxFailure != 0.1 || spec.MinFinished != 10 ||
		spec.OnFailure != "pause" || spec.Rate != 100 || spec.DeviceTimeout != events.Duration(30*time.Minute) {
		t.Errorf("defaults not applied: %+v", spec)
	}
	_, err = NormalizeSpec(events.RolloutSpec{ID: "a.b", Gate: 2, OnFailure: "explode", CELGate: "x"}, def, nil)
	want := `invalid job spec: job id "a.b" has '.' at byte 1; allowed are A-Z a-z 0-9 _ -; target version is empty; ` +
		`target checksum is empty; target url is empty; no devices: give a device type, a device list, or both; ` +
		`gate 2 is out of range (0, 1]; on failure "explode" is not pause or abort; cel gate: this build has no CEL support`
	if err == nil || err.Error() != want {
		t.Errorf("got  %v\nwant %s", err, want)
	}
}

func errorsAs(err error, target **CommandError) bool {
	ce, ok := err.(*CommandError)
	if ok {
		*target = ce
	}
	return ok
}
