package waves

import (
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"sort"
	"time"

	"github.com/otawatch/otawatch/events"
)

// ledgerSnapshot is the serialised Ledger: what its ROLLOUT events said
// (the plan, the retry round, each device's attempts wanted and sent), from
// which the indexes are rebuilt.
type ledgerSnapshot struct {
	JobID         string               `json:"jobId"`
	DeviceTimeout time.Duration        `json:"deviceTimeout"`
	Plan          [][]events.DeviceRef `json:"plan"`
	Attempt       int                  `json:"attempt,omitempty"`
	Sends         []ledgerSends        `json:"sends,omitempty"`
}

// ledgerSends is one device's send bookkeeping.
type ledgerSends struct {
	events.DeviceRef
	Want int `json:"want,omitempty"`
	Sent int `json:"sent,omitempty"`
}

// MarshalJSON serialises the ledger (for a snapshot of a read model that
// keeps one per job, as the api's does).
func (l Ledger) MarshalJSON() ([]byte, error) {
	s := ledgerSnapshot{JobID: l.JobID, DeviceTimeout: l.DeviceTimeout, Plan: l.Plan, Attempt: l.Attempt}
	refs := map[events.DeviceRef]*ledgerSends{}
	entry := func(ref events.DeviceRef) *ledgerSends {
		e := refs[ref]
		if e == nil {
			e = &ledgerSends{DeviceRef: ref}
			refs[ref] = e
		}
		return e
	}
	for ref, n := range l.want {
		entry(ref).Want = n
	}
	for ref, n := range l.sent {
		entry(ref).Sent = n
	}
	for _, e := range refs {
		s.Sends = append(s.Sends, *e)
	}
	sort.Slice(s.Sends, func(i, j int) bool {
		a, b := s.Sends[i], s.Sends[j]
		return a.TypeID < b.TypeID || a.TypeID == b.TypeID && a.DeviceID < b.DeviceID
	})
	return json.Marshal(s)
}

// UnmarshalJSON restores a ledger written by MarshalJSON: the same
// answers to DueIn, Sent, DeviceState and Progress as the ledger that was
// written.
func (l *Ledger) UnmarshalJSON(b []byte) error {
	var s ledgerSnapshot
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("decode ledger snapshot: %w", err)
	}
	*l = NewLedger(s.JobID, s.DeviceTimeout)
	l.Attempt = s.Attempt
	for _, e := range s.Sends {
		if e.Want != 0 {
			l.want[e.DeviceRef] = e.Want
		}
		if e.Sent != 0 {
			l.sent[e.DeviceRef] = e.Sent
		}
	}
	if s.Plan == nil {
		return nil
	}
	// The plan's indexes (wave of each device, devices due per wave) are
	// what job_started builds; building them the same way keeps one
	// definition.
	return l.Apply(events.TypeRolloutJobStarted, events.RolloutData{JobID: s.JobID, Plan: &events.RolloutPlan{Waves: s.Plan}})
}

// Clone returns a copy of the ledger that later Applies to either do not
// change: cheap enough to take under a read model's lock and serialise
// after it. The plan and each device's wave are shared: they are set once,
// when the job starts, and never changed.
func (l *Ledger) Clone() Ledger {
	c := *l
	c.want, c.sent = maps.Clone(l.want), maps.Clone(l.sent)
	if l.Plan == nil {
		c.waveOf = maps.Clone(l.waveOf) // filled in when the job starts
	}
	c.due = slices.Clone(l.due)
	return c
}
