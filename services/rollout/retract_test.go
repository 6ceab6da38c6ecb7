package rollout

import (
	"strings"
	"testing"
	"time"

	"github.com/otawatch/otawatch/events"
)

// refs names devices by id, comma-separated, in order.
func refs(rs []events.DeviceRef) string {
	var s []string
	for _, r := range rs {
		s = append(s, r.DeviceID)
	}
	return strings.Join(s, ",")
}

// recordOnly folds a desired event into the fleet without a devices_sent
// mark: a driver that crashed between record and mark.
func (h *harness) recordOnly(job, dev string, now time.Time) {
	h.t.Helper()
	e, err := events.New("rec-"+job+"-"+dev, events.SourceRollout, events.TypeShadowDesired, dev, now,
		events.ShadowDesiredData{TypeID: "t", DeviceID: dev, JobID: job, Wave: 1, Firmware: h.job.Spec.Target})
	if err != nil {
		h.t.Fatal(err)
	}
	h.fseq++
	if _, err := h.fleet.Apply(h.fseq, e); err != nil {
		h.t.Fatal(err)
	}
}

// markOnly folds a devices_sent mark whose desired event the fleet fold has
// not seen yet.
func (h *harness) markOnly(dev string, now time.Time) {
	h.fold([]Pending{{events.TypeRolloutDevicesSent, events.RolloutData{JobID: h.job.ID,
		Devices: []events.DeviceRef{{TypeID: "t", DeviceID: dev}}}}}, now)
}

func (h *harness) retracted(now time.Time, devs ...string) {
	d := events.RolloutData{JobID: h.job.ID}
	for _, id := range devs {
		d.Devices = append(d.Devices, events.DeviceRef{TypeID: "t", DeviceID: id})
	}
	h.fold([]Pending{{events.TypeRolloutDevicesRetracted, d}}, now)
}

func TestRetractions(t *testing.T) {
	// Five devices in wave 1 (sent at +1s), five in wave 2 (never sent).
	sentWave1 := func(h *harness) {
		h.mustCmd(CmdStart, at(0))
		h.decide(at(0))
		h.send(at(time.Second))
	}
	// d01 completes, d02 fails, d03 installs, d04 stays silent, d05 goes
	// offline.
	mixed := func(h *harness) {
		sentWave1(h)
		h.report("d01", "2.0.0", events.StatusCompleted, at(time.Minute))
		h.report("d02", "1.0.0", events.StatusFailed, at(time.Minute))
		h.report("d03", "2.0.0", events.StatusInProgress, at(time.Minute))
		h.offline("d05", at(2*time.Minute))
	}
	abort := func(h *harness) { h.mustCmd(CmdAbort, at(3*time.Minute)) }
	tests := []struct {
		name string
		spec func(s *events.RolloutSpec)
		// prep runs on a started-or-not job of 10 devices in waves of 5.
		prep func(h *harness)
		want string // Retractions, in plan order
		// then, if set, runs after and wantThen is Retractions again.
		then     func(h *harness)
		wantThen string
		// counts are RetractCounts at the end: retracted/pending.
		retracted, pending int
	}{
		{
			name:    "a running job clears nothing",
			prep:    mixed,
			want:    "",
			pending: 0,
		},
		{
			name:    "a paused job clears nothing",
			prep:    func(h *harness) { mixed(h); h.mustCmd(CmdPause, at(3*time.Minute)) },
			want:    "",
			pending: 0,
		},
		{
			name: "a job aborted before it started clears nothing",
			prep: abort,
			want: "",
		},
		{
			name:    "sent devices without a completed or failed report are cleared; queued ones are not",
			prep:    func(h *harness) { mixed(h); abort(h) },
			want:    "d03,d04,d05",
			pending: 3,
		},
		{
			name: "an abort by the failure policy clears like an operator's",
			spec: func(s *events.RolloutSpec) { s.OnFailure, s.MinFinished = events.OnFailureAbort, 1 },
			prep: func(h *harness) {
				sentWave1(h)
				h.report("d01", "1.0.0", events.StatusFailed, at(time.Minute))
				if got := names(h.decide(at(time.Minute))...); got != "job_aborted" {
					h.t.Fatalf("decided %q, want job_aborted", got)
				}
				if got := names(h.decide(at(2 * time.Minute))...); got != "" {
					h.t.Fatalf("an aborted job decided %q", got)
				}
			},
			want:    "d02,d03,d04,d05",
			pending: 4,
		},
		{
			name: "a desired event recorded but never marked sent is cleared (crash between record and mark)",
			prep: func(h *harness) {
				h.mustCmd(CmdStart, at(0))
				h.decide(at(0))
				h.recordOnly("job1", "d02", at(time.Second))
				abort(h)
			},
			want:    "d02",
			pending: 1,
		},
		{
			name: "a device marked sent whose desired event the fleet has not folded yet is cleared",
			prep: func(h *harness) {
				h.mustCmd(CmdStart, at(0))
				h.decide(at(0))
				h.markOnly("d04", at(time.Second))
				abort(h)
			},
			want:    "d04",
			pending: 1,
		},
		{
			name: "a later job's desired state is left alone",
			prep: func(h *harness) {
				mixed(h)
				abort(h)
				h.recordOnly("job2", "d04", at(4*time.Minute))
			},
			want:    "d03,d05",
			pending: 2,
		},
		{
			name: "cleared devices are done, and a repeated mark changes nothing",
			prep: func(h *harness) { mixed(h); abort(h) },
			want: "d03,d04,d05",
			then: func(h *harness) {
				h.retracted(at(4*time.Minute), "d03", "d05")
				h.retracted(at(4*time.Minute), "d03")
			},
			wantThen:  "d04",
			retracted: 2,
			pending:   1,
		},
		{
			name: "all cleared leaves nothing pending; a mark of a device outside the plan is ignored",
			prep: func(h *harness) { mixed(h); abort(h) },
			want: "d03,d04,d05",
			then: func(h *harness) {
				h.retracted(at(4*time.Minute), "d03", "d04", "d05", "ghost")
			},
			wantThen:  "",
			retracted: 3,
			pending:   0,
		},
		{
			name: "a device that completes after the abort needs no clear",
			prep: func(h *harness) { mixed(h); abort(h) },
			want: "d03,d04,d05",
			then: func(h *harness) {
				h.report("d03", "2.0.0", events.StatusCompleted, at(5*time.Minute))
			},
			wantThen: "d04,d05",
			pending:  2,
		},
		{
			name: "a failed device that starts over is cleared",
			prep: func(h *harness) { mixed(h); abort(h) },
			want: "d03,d04,d05",
			then: func(h *harness) {
				h.report("d02", "2.0.0", events.StatusInProgress, at(5*time.Minute))
			},
			wantThen: "d02,d03,d04,d05",
			pending:  4,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			spec := testSpec(10)
			spec.WaveSize = 5
			if tt.spec != nil {
				tt.spec(&spec)
			}
			h := newHarness(t, spec)
			tt.prep(h)
			if got := refs(Retractions(h.job, h.fleet, 0)); got != tt.want {
				t.Fatalf("retractions %q, want %q", got, tt.want)
			}
			if tt.then != nil {
				tt.then(h)
				if got := refs(Retractions(h.job, h.fleet, 0)); got != tt.wantThen {
					t.Fatalf("then retractions %q, want %q", got, tt.wantThen)
				}
			}
			r, p := RetractCounts(h.job, h.fleet)
			if r != tt.retracted || p != tt.pending {
				t.Errorf("counts: %d retracted, %d pending; want %d, %d", r, p, tt.retracted, tt.pending)
			}
			v := View(h.job, h.fleet, at(time.Hour), nil, false)
			if v.Retracted != tt.retracted || v.RetractPending != tt.pending {
				t.Errorf("view: %d retracted, %d pending; want %d, %d", v.Retracted, v.RetractPending, tt.retracted, tt.pending)
			}
		})
	}
}

func TestRetractionsLimitAndReplay(t *testing.T) {
	spec := testSpec(10)
	spec.WaveSize = 5
	h := newHarness(t, spec)
	h.mustCmd(CmdStart, at(0))
	h.decide(at(0))
	h.send(at(time.Second))
	h.mustCmd(CmdAbort, at(time.Minute))
	if got := refs(Retractions(h.job, h.fleet, 2)); got != "d01,d02" {
		t.Fatalf("first batch %q, want d01,d02", got)
	}
	h.retracted(at(2*time.Minute), "d01", "d02")
	if got := refs(Retractions(h.job, h.fleet, 2)); got != "d03,d04" {
		t.Fatalf("second batch %q, want d03,d04", got)
	}
	// An event at an applied sequence (a driver folds its append at once
	// and sees it again from the stream) changes nothing.
	seq := h.seq
	e, _ := events.New("again", events.SourceRollout, events.TypeRolloutDevicesRetracted, "job1", at(2*time.Minute),
		events.RolloutData{JobID: "job1", Devices: []events.DeviceRef{{TypeID: "t", DeviceID: "d05"}}})
	if j, err := Apply(h.job, seq, e); err != nil || j.Retracted(events.DeviceRef{TypeID: "t", DeviceID: "d05"}) {
		t.Fatalf("an event at an applied sequence changed the job (err %v)", err)
	}
	if !h.job.Retracted(events.DeviceRef{TypeID: "t", DeviceID: "d02"}) || h.job.Retracted(events.DeviceRef{TypeID: "t", DeviceID: "d03"}) {
		t.Error("Retracted: want d02 cleared and d03 not")
	}
}
