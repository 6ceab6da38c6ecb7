package ruleeval

// The state's way in and out of the engine: a snapshot (copied on the
// engine's goroutine, serialised anywhere) and the alerts folded back from
// ALERTS after one.

import (
	"encoding/json"
	"fmt"
	"maps"
	"sort"
	"time"

	"github.com/otawatch/otawatch/events"
	"github.com/otawatch/otawatch/services/internal/fleet"
)

// Restore folds an alert event read back from ALERTS into the alert
// state: a raise the engine does not have becomes active, a resolve of the
// active alert clears it. A restarted service calls it for the ALERTS
// events after its snapshot, so it neither raises again what it raised
// nor forgets to resolve it.
func (e *Engine) Restore(a events.AlertData) {
	st := e.alerts[a.Key]
	switch a.State {
	case events.AlertRaised:
		if st == nil {
			st = &alertState{Key: a.Key, RuleID: a.RuleID, TypeID: a.TypeID, DeviceID: a.DeviceID}
			e.alerts[a.Key] = st
		}
		cp := a
		if st.Active == nil {
			e.activeN++
		}
		st.Active = &cp
		st.PendingSeverity, st.PendingSince = "", time.Time{}
	case events.AlertResolved:
		if st != nil && st.Active != nil && st.Active.Severity == a.Severity && st.Active.StartsAt.Equal(a.StartsAt) {
			st.Active = nil
			e.activeN--
			if st.PendingSeverity == "" {
				delete(e.alerts, a.Key)
			}
		}
	}
}

// SetActive makes active exactly the alerts of active (raised alerts, at
// most one a key): an alert of another key, or of the same key with
// another severity or start, stops being active, and one the engine does
// not have becomes active, as Restore makes it. A level waiting for its
// rule's `for` stays waiting. A restarted service calls it where its alert
// state fell behind the alerts recorded on ALERTS.
func (e *Engine) SetActive(active []events.AlertData) {
	want := make(map[string]events.AlertData, len(active))
	for _, a := range active {
		want[a.Key] = a
	}
	for key, st := range e.alerts {
		if st.Active == nil {
			continue
		}
		if a, ok := want[key]; ok && a.Severity == st.Active.Severity && a.StartsAt.Equal(st.Active.StartsAt) {
			delete(want, key) // already as recorded
			continue
		}
		st.Active = nil
		e.activeN--
		if st.PendingSeverity == "" {
			delete(e.alerts, key)
		}
	}
	for _, a := range want {
		a.State = events.AlertRaised
		e.Restore(a)
	}
}

// snapshot is the serialised engine.
type snapshot struct {
	ShadowSeq  uint64               `json:"shadowSeq"`
	RolloutSeq uint64               `json:"rolloutSeq"`
	Now        time.Time            `json:"now"`
	Fleet      *fleet.State         `json:"fleet"`
	Jobs       *Jobs                `json:"jobs"`
	Alerts     []*alertState        `json:"alerts"`
	Echo       map[string]time.Time `json:"echo,omitempty"`
}

// Snapshot is a copy of the engine's state, taken on the engine's
// goroutine in a few milliseconds and serialised anywhere (MarshalJSON),
// so a large fleet's snapshot does not stall event handling.
type Snapshot struct {
	shadowSeq, rolloutSeq uint64
	now                   time.Time
	fleetSeq              uint64
	devices               []fleet.Device
	jobs                  []byte
	alerts                []alertState
	echo                  map[string]time.Time
}

// Snapshot copies the state. Devices and alerts are copied by value; what
// they point to (a device's target, an alert's data) is replaced, never
// changed in place, by the engine, so sharing it is safe.
func (e *Engine) Snapshot() (*Snapshot, error) {
	jobs, err := e.jobs.MarshalJSON()
	if err != nil {
		return nil, err
	}
	s := &Snapshot{shadowSeq: e.ShadowSeq, rolloutSeq: e.RolloutSeq, now: e.now, fleetSeq: e.fleet.LastSeq, jobs: jobs,
		devices: make([]fleet.Device, 0, e.fleet.Len()), alerts: make([]alertState, 0, len(e.alerts)), echo: maps.Clone(e.echo)}
	e.fleet.Devices(func(d *fleet.Device) { s.devices = append(s.devices, *d) })
	for _, a := range e.alerts {
		s.alerts = append(s.alerts, *a)
	}
	return s, nil
}

// fleetSnapshot has the JSON form of fleet.State's MarshalJSON.
type fleetSnapshot struct {
	LastSeq uint64         `json:"lastSeq"`
	Devices []fleet.Device `json:"devices"`
}

// MarshalJSON serialises the copy in the form Engine.UnmarshalJSON reads.
func (s *Snapshot) MarshalJSON() ([]byte, error) {
	sort.Slice(s.devices, func(i, j int) bool {
		a, b := &s.devices[i], &s.devices[j]
		return a.TypeID < b.TypeID || a.TypeID == b.TypeID && a.DeviceID < b.DeviceID
	})
	sort.Slice(s.alerts, func(i, j int) bool { return s.alerts[i].Key < s.alerts[j].Key })
	fb, err := json.Marshal(fleetSnapshot{LastSeq: s.fleetSeq, Devices: s.devices})
	if err != nil {
		return nil, err
	}
	alerts := make([]*alertState, len(s.alerts))
	for i := range s.alerts {
		alerts[i] = &s.alerts[i]
	}
	return json.Marshal(struct {
		ShadowSeq  uint64               `json:"shadowSeq"`
		RolloutSeq uint64               `json:"rolloutSeq"`
		Now        time.Time            `json:"now"`
		Fleet      json.RawMessage      `json:"fleet"`
		Jobs       json.RawMessage      `json:"jobs"`
		Alerts     []*alertState        `json:"alerts"`
		Echo       map[string]time.Time `json:"echo,omitempty"`
	}{s.shadowSeq, s.rolloutSeq, s.now, fb, s.jobs, alerts, s.echo})
}

// MarshalJSON serialises the engine's state (not its rules).
func (e *Engine) MarshalJSON() ([]byte, error) {
	s, err := e.Snapshot()
	if err != nil {
		return nil, err
	}
	return s.MarshalJSON()
}

// UnmarshalJSON restores the state written by MarshalJSON, keeping the
// engine's rules and options. Alerts of rules the engine does not run stay
// until SetRules resolves them.
func (e *Engine) UnmarshalJSON(b []byte) error {
	s := snapshot{Fleet: fleet.New(), Jobs: NewJobs()}
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("decode alerting snapshot: %w", err)
	}
	e.fleet, e.jobs = s.Fleet, s.Jobs
	e.ShadowSeq, e.RolloutSeq, e.now = s.ShadowSeq, s.RolloutSeq, s.Now
	e.alerts = make(map[string]*alertState, len(s.Alerts))
	e.activeN = 0
	for _, a := range s.Alerts {
		e.alerts[a.Key] = a
		if a.Active != nil {
			e.activeN++
		}
	}
	e.echo = s.Echo
	if e.echo == nil {
		e.echo = map[string]time.Time{}
	}
	return nil
}
