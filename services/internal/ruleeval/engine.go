package ruleeval

import (
	"fmt"
	"sort"
	"time"

	"github.com/otawatch/otawatch/events"
	"github.com/otawatch/otawatch/rules"
	"github.com/otawatch/otawatch/services/internal/fleet"
)

// Options tune an Engine.
type Options struct {
	// OfflineAfter is how long a device that owes a report may be silent
	// before Stale calls it potentially offline; 0 is
	// fleet.DefaultOfflineAfter, negative turns staleness off.
	OfflineAfter time.Duration
	// EvalTimeout bounds the evaluations of one event, or of one device on
	// a tick; 0 is rules.DefaultEvalTimeout.
	EvalTimeout time.Duration
	// OnEvalError, if set, hears every evaluation error (the alert it was
	// about stays as it was). It runs on the engine's goroutine.
	OnEvalError func(ruleID, key string, err error)
}

// Engine is the fleet fold, the rollout fold and the alert lifecycle of a
// rule set. It is not safe for concurrent use: one goroutine owns it. The
// same sequence of calls gives the same transitions, live or replayed.
type Engine struct {
	opts  Options
	fleet *fleet.State
	jobs  *Jobs
	set   *rules.Set
	// device rules (both kinds), device rules evaluated on ticks, fleet
	// rules evaluated on events, fleet rules evaluated on ticks.
	devRules, devTickRules, fleetRules, fleetTickRules []*rules.Rule

	// eventData: some rule reads event keys beyond the envelope, so each
	// event's data is decoded for the rules (the fold decodes it anyway).
	eventData bool

	alerts map[string]*alertState
	// activeN counts alerts with Active set.
	activeN int
	// echo holds ids of events this engine applied before they were in
	// the log (presence events of Stale); the copy from the log is skipped.
	echo map[string]time.Time
	// ShadowSeq and RolloutSeq are the last stream sequences handled,
	// poison included.
	ShadowSeq, RolloutSeq uint64
	// now is the latest event or tick time seen.
	now   time.Time
	stats map[string]*RuleStats
}

// alertState is one alert key's lifecycle: the raised alert, if any, and a
// level waiting for the rule's `for`.
type alertState struct {
	Key             string            `json:"key"`
	RuleID          string            `json:"ruleId"`
	TypeID          string            `json:"typeId,omitempty"`
	DeviceID        string            `json:"deviceId,omitempty"`
	Active          *events.AlertData `json:"active,omitempty"`
	PendingSeverity string            `json:"pendingSeverity,omitempty"`
	PendingSince    time.Time         `json:"pendingSince,omitzero"`
}

// RuleStats count a rule's evaluations.
type RuleStats struct {
	Evaluations uint64
	Errors      uint64
	LastError   string
}

// Transition is an alert raised or resolved.
type Transition struct {
	Alert events.AlertData
	// At is the event or tick time of the transition (the alert event's
	// time).
	At time.Time
}

// ID is the transition's deterministic event id (and Nats-Msg-Id).
func (t Transition) ID() string {
	return events.AlertEventID(t.Alert.Key, t.Alert.Severity, t.Alert.StartsAt, t.Alert.State)
}

// Subject is the transition's ALERTS subject.
func (t Transition) Subject() string {
	return events.AlertSubject(t.Alert.State, t.Alert.Severity, t.Alert.RuleID)
}

// Event is the transition's CloudEvents envelope.
func (t Transition) Event() (events.Event, error) {
	return events.New(t.ID(), events.SourceAlerting, events.AlertEventType(t.Alert.State), t.Alert.Key, t.At, t.Alert)
}

// PoisonError is an event the engine cannot use: it is malformed, and
// changed nothing. The caller records it on REJECTED.
type PoisonError struct{ Err error }

func (e *PoisonError) Error() string { return e.Err.Error() }

func (e *PoisonError) Unwrap() error { return e.Err }

// New returns an engine with an empty fleet running set (which may be
// empty, not nil).
func New(set *rules.Set, o Options) *Engine {
	if o.OfflineAfter == 0 {
		o.OfflineAfter = fleet.DefaultOfflineAfter
	}
	if o.EvalTimeout <= 0 {
		o.EvalTimeout = rules.DefaultEvalTimeout
	}
	e := &Engine{
		opts:   o,
		fleet:  fleet.New(),
		jobs:   NewJobs(),
		alerts: map[string]*alertState{},
		echo:   map[string]time.Time{},
		stats:  map[string]*RuleStats{},
	}
	e.SetRules(set)
	return e
}

// Fleet is the engine's fleet fold (read it only on the engine's
// goroutine).
func (e *Engine) Fleet() *fleet.State { return e.fleet }

// Jobs is the engine's rollout fold.
func (e *Engine) Jobs() *Jobs { return e.jobs }

// Rules is the running rule set.
func (e *Engine) Rules() *rules.Set { return e.set }

// Now is the latest event or tick time the engine saw.
func (e *Engine) Now() time.Time { return e.now }

// Stats returns a copy of each rule's counters.
func (e *Engine) Stats() map[string]RuleStats {
	out := make(map[string]RuleStats, len(e.stats))
	for id, s := range e.stats {
		out[id] = *s
	}
	return out
}

// ActiveCount is the number of raised alerts.
func (e *Engine) ActiveCount() int { return e.activeN }

// Active returns the raised alerts, sorted by key.
func (e *Engine) Active() []events.AlertData {
	var out []events.AlertData
	for _, a := range e.alerts {
		if a.Active != nil {
			out = append(out, *a.Active)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Key < out[j].Key })
	return out
}

// SetRules replaces the running rules. Alerts of rules that are gone (or
// whose key changed with their scope) are resolved at the engine's latest
// time; the others keep their state and are re-evaluated on the next event
// or tick.
func (e *Engine) SetRules(set *rules.Set) []Transition {
	if set == nil {
		set = &rules.Set{}
	}
	e.set = set
	e.devRules, e.devTickRules, e.fleetRules, e.fleetTickRules = nil, nil, nil, nil
	e.eventData = false
	for _, r := range set.Rules {
		e.eventData = e.eventData || r.ReadsEventData()
		if r.Scope == rules.ScopeFleet {
			e.fleetRules = append(e.fleetRules, r)
			if r.OnTick() {
				e.fleetTickRules = append(e.fleetTickRules, r)
			}
			continue
		}
		e.devRules = append(e.devRules, r)
		if r.OnTick() {
			e.devTickRules = append(e.devTickRules, r)
		}
	}
	var out []Transition
	for _, key := range e.sortedKeys() {
		a := e.alerts[key]
		r := set.Rule(a.RuleID)
		if r != nil && r.Key(a.TypeID, a.DeviceID) == key {
			continue
		}
		if a.Active != nil {
			out = append(out, e.resolve(a, e.now, events.ResolvedRuleRemoved))
		}
		delete(e.alerts, key)
	}
	return out
}

func (e *Engine) sortedKeys() []string {
	keys := make([]string, 0, len(e.alerts))
	for k := range e.alerts {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// ApplyShadow folds one SHADOW event and evaluates the rules: the device
// rules of its device, then the fleet rules. An event this engine already
// applied through ApplyLocal is skipped. A *PoisonError means the event is
// malformed and changed nothing.
func (e *Engine) ApplyShadow(seq uint64, ev events.Event) ([]Transition, error) {
	if seq > e.ShadowSeq {
		e.ShadowSeq = seq
	}
	if _, ok := e.echo[ev.ID]; ok {
		delete(e.echo, ev.ID)
		return nil, nil
	}
	return e.applyShadow(seq, ev, true)
}

// Skip records that a message of stream (SHADOW or ROLLOUT) was handled
// without the engine, so a snapshot resumes after it: one that did not
// decode.
func (e *Engine) Skip(stream string, seq uint64) {
	switch {
	case stream == events.StreamShadow && seq > e.ShadowSeq:
		e.ShadowSeq = seq
	case stream == events.StreamRollout && seq > e.RolloutSeq:
		e.RolloutSeq = seq
	}
}

// ApplyLocal applies a SHADOW event this engine produced (a presence event
// of Stale) now, before it comes back from the log, so the rest of the
// tick sees it; its copy from the log is then skipped. It evaluates the
// device's rules but not the fleet rules: the tick evaluates those once,
// after all its presence events, rather than once per device.
func (e *Engine) ApplyLocal(ev events.Event) ([]Transition, error) {
	trs, err := e.applyShadow(0, ev, false)
	if err == nil {
		e.echo[ev.ID] = ev.Time
	}
	return trs, err
}

// eventVars is the `event` variable of ev for this rule set: decoded
// only if a rule reads beyond the envelope (the message templates decode
// it when they need it).
func (e *Engine) eventVars(ev events.Event) (map[string]any, error) {
	if e.eventData {
		return EventVars(ev)
	}
	return EnvelopeVars(ev), nil
}

func (e *Engine) applyShadow(seq uint64, ev events.Event, fleetRules bool) ([]Transition, error) {
	evVars, err := e.eventVars(ev)
	if err != nil {
		return nil, &PoisonError{Err: err}
	}
	if evVars == nil {
		return nil, nil // not a SHADOW type: nothing to fold or evaluate
	}
	d, err := e.fleet.Apply(seq, ev)
	if err != nil {
		return nil, &PoisonError{Err: err}
	}
	if d == nil {
		return nil, nil
	}
	now := ev.Time
	e.seen(now)
	c := e.newEvalCtx(evVars, now)
	c.ev, c.lazy = ev, !e.eventData
	defer c.done()
	var out []Transition
	if len(e.devRules) > 0 {
		e.evalDevice(c, e.devRules, d, &out)
	}
	if fleetRules {
		e.evalFleet(c, e.fleetRules, &out)
	}
	return out, nil
}

// ApplyRollout folds one ROLLOUT event and, if it changed a job, evaluates
// the fleet rules. A *PoisonError means the event is malformed.
func (e *Engine) ApplyRollout(seq uint64, ev events.Event) ([]Transition, error) {
	if seq > e.RolloutSeq {
		e.RolloutSeq = seq
	}
	changed, err := e.jobs.Apply(seq, ev)
	if err != nil {
		return nil, &PoisonError{Err: err}
	}
	if !changed {
		return nil, nil
	}
	e.seen(ev.Time)
	evVars, err := e.eventVars(ev)
	if err != nil {
		return nil, &PoisonError{Err: err}
	}
	c := e.newEvalCtx(evVars, ev.Time)
	c.ev, c.lazy = ev, !e.eventData
	defer c.done()
	var out []Transition
	e.evalFleet(c, e.fleetRules, &out)
	return out, nil
}

// Stale returns the presence events (potentially_offline, time now) of
// the devices that become potentially offline at now (fleet.State.Stale:
// they owe a report, have been quiet for longer than OfflineAfter and the
// broker does not say they are online). A device that finished and is
// silent is idle and gets none. The caller publishes them (live) or not
// (backtest), then applies each with ApplyLocal before calling Tick; a
// device so marked is not named again until it is back online, so
// presence events are written only on transitions.
func (e *Engine) Stale(now time.Time) []events.Event {
	if e.opts.OfflineAfter < 0 {
		return nil
	}
	stale := e.fleet.Stale(now, e.opts.OfflineAfter)
	out := make([]events.Event, 0, len(stale))
	for _, d := range stale {
		id := events.PresenceEventID(d.TypeID, d.DeviceID, events.PresencePotentiallyOffline, d.LastSeen)
		if _, done := e.echo[id]; done {
			continue
		}
		ev, err := events.New(id, events.SourceAlerting, events.TypeDevicePresence,
			events.DevicePresenceSubject(d.TypeID, d.DeviceID), now,
			events.DevicePresenceData{TypeID: d.TypeID, DeviceID: d.DeviceID, State: events.PresencePotentiallyOffline, LastSeen: d.LastSeen})
		if err != nil {
			continue // unreachable: the data always marshals
		}
		out = append(out, ev)
	}
	return out
}

// echoKeep is how long an id waits in the echo set for its copy from the
// log; one that never comes (its publish was a duplicate of one already
// read) is dropped after this.
const echoKeep = time.Hour

// Tick evaluates the tick rules at time now: device tick rules for every
// known device, then fleet tick rules. Devices are visited in no
// particular order (each alert key's lifecycle is its own); the
// transitions come sorted by key.
func (e *Engine) Tick(now time.Time) []Transition {
	e.seen(now)
	for id, t := range e.echo {
		if now.Sub(t) > echoKeep {
			delete(e.echo, id)
		}
	}
	evVars := map[string]any{"kind": rules.KindTick, "time": now}
	var out []Transition
	if len(e.devTickRules) > 0 {
		c := e.newEvalCtx(evVars, now)
		n := 0
		e.fleet.Devices(func(d *fleet.Device) {
			if n++; n%256 == 0 {
				c.refresh()
			}
			e.evalDevice(c, e.devTickRules, d, &out)
		})
		c.done()
		sort.SliceStable(out, func(i, j int) bool { return out[i].Alert.Key < out[j].Alert.Key })
	}
	c := e.newEvalCtx(evVars, now)
	e.evalFleet(c, e.fleetTickRules, &out)
	c.done()
	return out
}

func (e *Engine) seen(t time.Time) {
	if t.After(e.now) {
		e.now = t
	}
}

// RunTick is a whole tick as the service runs it: the presence events of
// Stale go to publish (nil publishes nothing: tests and backtests), are
// applied with ApplyLocal, and the tick rules run. It returns the presence
// events and every transition, those of the presence events first. If
// publish fails nothing is applied, and the next tick tries again.
func (e *Engine) RunTick(now time.Time, publish func([]events.Event) error) ([]events.Event, []Transition, error) {
	stale := e.Stale(now)
	if len(stale) > 0 && publish != nil {
		if err := publish(stale); err != nil {
			return nil, nil, fmt.Errorf("publish presence: %w", err)
		}
	}
	var out []Transition
	for _, ev := range stale {
		trs, err := e.ApplyLocal(ev)
		if err != nil {
			return stale, out, err // unreachable: the engine built the event
		}
		out = append(out, trs...)
	}
	return stale, append(out, e.Tick(now)...), nil
}
