package waves

import (
	"testing"
	"time"

	"github.com/otawatch/otawatch/events"
	"github.com/otawatch/otawatch/services/internal/fleet"
)

var t0 = time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)

func ref(id string) events.DeviceRef { return events.DeviceRef{TypeID: "sensor", DeviceID: id} }

// fold applies SHADOW events to a fleet state.
type fold struct {
	t   *testing.T
	s   *fleet.State
	seq uint64
}

func (f *fold) apply(typ, id string, at time.Time, data any) {
	f.t.Helper()
	e, err := events.New(events.IdentityID("t", typ, id, at.String()), events.SourceBridge, typ, id, at, data)
	if err != nil {
		f.t.Fatal(err)
	}
	f.seq++
	if _, err := f.s.Apply(f.seq, e); err != nil {
		f.t.Fatal(err)
	}
}

func (f *fold) report(id, version, status string, at time.Time) {
	f.apply(events.TypeShadowReported, id, at, events.ShadowReportedData{TypeID: "sensor", DeviceID: id,
		Firmware: events.Firmware{Version: version, Status: status, Timestamp: at}})
}

func (f *fold) desire(job, id string, at time.Time) {
	f.apply(events.TypeShadowDesired, id, at, events.ShadowDesiredData{TypeID: "sensor", DeviceID: id, JobID: job, Wave: 1,
		Firmware: events.DesiredFirmware{Version: "2.0"}})
}

func (f *fold) presence(id, state string, lastSeen, at time.Time) {
	f.apply(events.TypeDevicePresence, id, at, events.DevicePresenceData{TypeID: "sensor", DeviceID: id, State: state, LastSeen: lastSeen})
}

// ledger folds job_created and job_started of job "j" over plan, and
// devices_sent for sent.
func ledger(t *testing.T, timeout time.Duration, plan [][]events.DeviceRef, sent []events.DeviceRef) *Ledger {
	t.Helper()
	l := NewLedger("j", 0)
	for _, ev := range []struct {
		typ string
		d   events.RolloutData
	}{
		{events.TypeRolloutJobCreated, events.RolloutData{JobID: "j", Spec: &events.RolloutSpec{ID: "j", DeviceTimeout: events.Duration(timeout)}}},
		{events.TypeRolloutJobStarted, events.RolloutData{JobID: "j", Plan: &events.RolloutPlan{Waves: plan}}},
		{events.TypeRolloutDevicesSent, events.RolloutData{JobID: "j", Devices: sent}},
	} {
		if err := l.Apply(ev.typ, ev.d); err != nil {
			t.Fatal(err)
		}
	}
	return &l
}

func TestDeviceState(t *testing.T) {
	const timeout = 30 * time.Minute
	later := t0.Add(time.Minute)
	tests := []struct {
		name    string
		notSent bool
		events  func(f *fold, id string)
		now     time.Time
		want    State
	}{
		{"not acknowledged by the broker", true, func(f *fold, id string) { f.desire("j", id, t0) }, later, Queued},
		{"sent, the fleet has not seen the desired event", false, func(*fold, string) {}, later, Pending},
		{"sent, no report since", false, func(f *fold, id string) { f.desire("j", id, t0) }, later, Pending},
		{"another job's desired state", false, func(f *fold, id string) { f.desire("other", id, t0) }, later, Pending},
		{"installing", false, func(f *fold, id string) {
			f.desire("j", id, t0)
			f.report(id, "1.0", events.StatusInProgress, later)
		}, later, InProgress},
		{"completed on the target", false, func(f *fold, id string) {
			f.desire("j", id, t0)
			f.report(id, "2.0", events.StatusCompleted, later)
		}, later, Completed},
		{"failed", false, func(f *fold, id string) {
			f.desire("j", id, t0)
			f.report(id, "1.0", events.StatusFailed, later)
		}, later, Failed},
		{"reported before, then guessed offline", false, func(f *fold, id string) {
			f.report(id, "1.0", events.StatusCompleted, t0.Add(-time.Hour))
			f.desire("j", id, t0)
			f.presence(id, events.PresencePotentiallyOffline, t0.Add(-time.Hour), t0.Add(11*time.Minute))
		}, t0.Add(12 * time.Minute), Offline},
		{"never reported, its will says offline", false, func(f *fold, id string) {
			f.presence(id, events.PresenceOffline, time.Time{}, t0.Add(-time.Minute))
			f.desire("j", id, t0)
		}, later, Offline},
		{"completed, then offline: completed, not also offline", false, func(f *fold, id string) {
			f.desire("j", id, t0)
			f.report(id, "2.0", events.StatusCompleted, later)
			f.presence(id, events.PresenceOffline, later, t0.Add(time.Hour))
		}, t0.Add(time.Hour), Completed},
		{"silent past the device timeout", false, func(f *fold, id string) { f.desire("j", id, t0) }, t0.Add(timeout + time.Second), TimedOut},
		{"installing past the device timeout", false, func(f *fold, id string) {
			f.desire("j", id, t0)
			f.report(id, "1.0", events.StatusInProgress, later)
		}, t0.Add(timeout + time.Second), TimedOut},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := &fold{t: t, s: fleet.New()}
			tt.events(f, "d")
			var sent []events.DeviceRef
			if !tt.notSent {
				sent = []events.DeviceRef{ref("d")}
			}
			l := ledger(t, timeout, [][]events.DeviceRef{{ref("d")}}, sent)
			if got := l.DeviceState(ref("d"), f.s, tt.now); got != tt.want {
				t.Errorf("state %s, want %s", got, tt.want)
			}
		})
	}
}

// TestRetryQueuesAgain: retry-failed raises a device's attempt, so it is
// queued until the broker acknowledges the new send.
func TestRetryQueuesAgain(t *testing.T) {
	f := &fold{t: t, s: fleet.New()}
	f.desire("j", "d", t0)
	f.report("d", "1.0", events.StatusFailed, t0.Add(time.Minute))
	l := ledger(t, 0, [][]events.DeviceRef{{ref("d")}}, []events.DeviceRef{ref("d")})
	steps := []struct {
		typ  string
		d    events.RolloutData
		want State
	}{
		{events.TypeRolloutDevicesRetried, events.RolloutData{JobID: "j", Devices: []events.DeviceRef{ref("d")}, Attempt: 1}, Queued},
		{events.TypeRolloutDevicesSent, events.RolloutData{JobID: "j", Devices: []events.DeviceRef{ref("d")}, Attempt: 0}, Queued},
		{events.TypeRolloutDevicesSent, events.RolloutData{JobID: "j", Devices: []events.DeviceRef{ref("d")}, Attempt: 1}, Failed},
	}
	for i, s := range steps {
		if err := l.Apply(s.typ, s.d); err != nil {
			t.Fatal(err)
		}
		if got := l.DeviceState(ref("d"), f.s, t0.Add(2*time.Minute)); got != s.want {
			t.Errorf("after step %d (%s attempt %d): %s, want %s", i+1, events.RolloutEventName(s.typ), s.d.Attempt, got, s.want)
		}
	}
	if l.Attempt != 1 {
		t.Errorf("attempt %d, want 1", l.Attempt)
	}
}

// TestProgressAddsUpToThePlan: every wave's states add up to its size in
// the plan, a wave not sent yet included.
func TestProgressAddsUpToThePlan(t *testing.T) {
	f := &fold{t: t, s: fleet.New()}
	w1 := []events.DeviceRef{ref("a"), ref("b"), ref("c"), ref("d")}
	w2 := []events.DeviceRef{ref("e"), ref("f"), ref("g")}
	for _, r := range w1[:3] {
		f.desire("j", r.DeviceID, t0)
	}
	f.report("a", "2.0", events.StatusCompleted, t0.Add(time.Minute))
	f.report("b", "1.0", events.StatusFailed, t0.Add(time.Minute))
	l := ledger(t, 0, [][]events.DeviceRef{w1, w2}, w1[:3])
	tests := []struct {
		wave int
		want events.WaveProgress
	}{
		{1, events.WaveProgress{Targeted: 4, Queued: 1, Pending: 1, Completed: 1, Failed: 1}},
		{2, events.WaveProgress{Targeted: 3, Queued: 3}},
		{3, events.WaveProgress{}},
		{0, events.WaveProgress{}},
	}
	for _, tt := range tests {
		got := l.Progress(tt.wave, f.s, t0.Add(time.Hour))
		if got != tt.want {
			t.Errorf("wave %d: %+v, want %+v", tt.wave, got, tt.want)
		}
	}
	if due := l.DueIn(2, 10); len(due) != 4 || due[0].Ref != ref("d") || due[1].Wave != 2 {
		t.Errorf("due %+v, want d of wave 1, then wave 2's three", due)
	}
	if due := l.DueIn(1, 10); len(due) != 1 {
		t.Errorf("due in wave 1 only: %+v, want d", due)
	}
}
