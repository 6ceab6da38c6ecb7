package ruleeval

// The evaluation half of the engine: one event's or tick's variables are
// built once (evalCtx) and every rule of the scope runs on them; evalRule
// moves an alert key through its lifecycle (pending, raised, escalated,
// resolved).

import (
	"bytes"
	"context"
	"fmt"
	"maps"
	"time"

	"github.com/otawatch/otawatch/events"
	"github.com/otawatch/otawatch/rules"
	"github.com/otawatch/otawatch/services/internal/fleet"
)

// evalCtx is what the evaluations of one event or tick share: the event
// map, the fleet map, the rollout maps and the prepared input, each built
// once; the device variable is swapped per device without building a map.
type evalCtx struct {
	e        *Engine
	ctx      context.Context
	cancel   context.CancelFunc
	event    map[string]any
	now      time.Time
	fleetMap map[string]any
	rollouts map[string]map[string]any

	// ev is the event; lazy means event holds its envelope only and
	// fullEvent decodes the rest for a message.
	ev   events.Event
	lazy bool

	devIn    rules.Input // for device rules
	devReady bool
	devJob   string // the job whose rollout map devIn holds
	dev      deviceObject
}

func (e *Engine) newEvalCtx(event map[string]any, now time.Time) *evalCtx {
	ctx, cancel := context.WithTimeout(context.Background(), e.opts.EvalTimeout)
	return &evalCtx{e: e, ctx: ctx, cancel: cancel, event: event, now: now}
}

// refresh gives the next batch of evaluations a fresh deadline.
func (c *evalCtx) refresh() {
	if c.ctx.Err() == nil {
		if dl, ok := c.ctx.Deadline(); ok && time.Until(dl) > c.e.opts.EvalTimeout/2 {
			return
		}
	}
	c.cancel()
	c.ctx, c.cancel = context.WithTimeout(context.Background(), c.e.opts.EvalTimeout)
}

func (c *evalCtx) done() { c.cancel() }

// fullEvent is the event variable with the data decoded, for templates.
func (c *evalCtx) fullEvent() map[string]any {
	if c.lazy {
		if m, err := EventVars(c.ev); err == nil && m != nil {
			c.event = m
		}
		c.lazy = false
	}
	return c.event
}

func (c *evalCtx) fleetVars() map[string]any {
	if c.fleetMap == nil {
		c.fleetMap = FleetVars(c.e.fleet.Metrics())
	}
	return c.fleetMap
}

func (c *evalCtx) rolloutVars(j Job) map[string]any {
	if m, ok := c.rollouts[j.ID]; ok {
		return m
	}
	if c.rollouts == nil {
		c.rollouts = map[string]map[string]any{}
	}
	m := RolloutVars(j, c.e.fleet.Wave(j.ID, j.Wave))
	c.rollouts[j.ID] = m
	return m
}

// deviceInput is the input for d's rules.
func (c *evalCtx) deviceInput(d *fleet.Device, job Job) *rules.Input {
	if !c.devReady {
		c.devIn = rules.Vars{Event: c.event, Fleet: c.fleetVars(), Rollout: c.rolloutVars(job), Now: c.now}.Input()
		c.devReady, c.devJob = true, job.ID
	} else if job.ID != c.devJob {
		c.devIn.SetRollout(c.rolloutVars(job))
		c.devJob = job.ID
	}
	c.dev.d = d
	c.devIn.SetDevice(&c.dev)
	return &c.devIn
}

// deviceJob is the `rollout` of a device rule: the device's job, else the
// current job.
func (e *Engine) deviceJob(d *fleet.Device) Job {
	if d.JobID != "" {
		return e.jobs.Job(d.JobID)
	}
	return e.jobs.Current()
}

func (e *Engine) evalDevice(c *evalCtx, rs []*rules.Rule, d *fleet.Device, out *[]Transition) {
	job := e.deviceJob(d)
	in := c.deviceInput(d, job)
	vars := func() rules.Vars {
		return rules.Vars{Event: c.fullEvent(), Device: DeviceVars(*d), Fleet: c.fleetVars(), Rollout: c.rolloutVars(job), Now: c.now}
	}
	for _, r := range rs {
		key := r.Key(d.TypeID, d.DeviceID)
		e.evalRule(c, r, key, meta{typeID: d.TypeID, deviceID: d.DeviceID, jobID: job.ID, wave: d.Wave}, vars, in, out)
	}
}

func (e *Engine) evalFleet(c *evalCtx, rs []*rules.Rule, out *[]Transition) {
	if len(rs) == 0 {
		return
	}
	job := e.jobs.Current()
	v := rules.Vars{Event: c.event, Device: map[string]any{}, Fleet: c.fleetVars(), Rollout: c.rolloutVars(job), Now: c.now}
	in := v.Input()
	vars := func() rules.Vars {
		v.Event = c.fullEvent()
		return v
	}
	for _, r := range rs {
		e.evalRule(c, r, r.Key("", ""), meta{jobID: job.ID, wave: job.Wave}, vars, &in, out)
	}
}

type meta struct {
	typeID, deviceID, jobID string
	wave                    int
}

func (e *Engine) stat(id string) *RuleStats {
	s := e.stats[id]
	if s == nil {
		s = &RuleStats{}
		e.stats[id] = s
	}
	return s
}

// evalRule evaluates a rule's levels and steps its alert's lifecycle. An
// evaluation error leaves the alert as it was: an unknown condition is
// neither a reason to page nor a reason to stop paging. vars builds the
// variables as maps, for the message, only when an alert is raised.
func (e *Engine) evalRule(c *evalCtx, r *rules.Rule, key string, m meta, vars func() rules.Vars, in *rules.Input, out *[]Transition) {
	st := e.stat(r.ID)
	st.Evaluations++
	level := ""
	for _, l := range r.Levels {
		ok, err := l.Condition.EvalInput(c.ctx, *in)
		if err != nil {
			st.Errors++
			st.LastError = err.Error()
			if e.opts.OnEvalError != nil {
				e.opts.OnEvalError(r.ID, key, err)
			}
			return
		}
		if ok {
			level = l.Severity
			break
		}
	}
	now := c.now
	a := e.alerts[key]
	if level == "" {
		if a == nil {
			return
		}
		if a.Active != nil {
			*out = append(*out, e.resolve(a, now, events.ResolvedCleared))
		}
		delete(e.alerts, key)
		return
	}
	if a == nil {
		a = &alertState{Key: key, RuleID: r.ID, TypeID: m.typeID, DeviceID: m.deviceID}
		e.alerts[key] = a
	}
	if a.Active != nil && a.Active.Severity == level {
		a.PendingSeverity, a.PendingSince = "", time.Time{}
		return
	}
	if a.PendingSeverity != level {
		a.PendingSeverity, a.PendingSince = level, now
	}
	if now.Sub(a.PendingSince) < r.For {
		return
	}
	if a.Active != nil {
		*out = append(*out, e.resolve(a, now, events.ResolvedSeverityChanged))
	}
	data := events.AlertData{
		Key: key, RuleID: r.ID, Severity: level, State: events.AlertRaised,
		TypeID: m.typeID, DeviceID: m.deviceID, JobID: m.jobID, Wave: m.wave,
		Labels: maps.Clone(r.Labels), StartsAt: a.PendingSince,
	}
	if r.Value != nil {
		if v, err := r.Value.Eval(c.ctx, *in); err == nil {
			data.Value = &v
		} else {
			st.Errors++
			st.LastError = err.Error()
			if e.opts.OnEvalError != nil {
				e.opts.OnEvalError(r.ID, key, err)
			}
		}
	}
	data.Message = render(r, vars(), level, data.Value)
	a.Active = &data
	e.activeN++
	a.PendingSeverity, a.PendingSince = "", time.Time{}
	*out = append(*out, Transition{Alert: data, At: now})
}

func (e *Engine) resolve(a *alertState, now time.Time, reason string) Transition {
	data := *a.Active
	data.State = events.AlertResolved
	end := now
	data.EndsAt = &end
	data.Reason = reason
	a.Active = nil
	e.activeN--
	return Transition{Alert: data, At: now}
}

// render executes a rule's message template over the variables. A
// template that fails at run time still gives a message: the error.
func render(r *rules.Rule, v rules.Vars, severity string, value *float64) string {
	data := map[string]any{
		rules.VarEvent: v.Event, rules.VarDevice: v.Device, rules.VarFleet: v.Fleet, rules.VarRollout: v.Rollout,
		rules.VarNow: v.Now, "rule": r.ID, "severity": severity, "labels": r.Labels, "value": 0.0,
	}
	if value != nil {
		data["value"] = *value
	}
	var b bytes.Buffer
	if err := r.Message.Execute(&b, data); err != nil {
		return fmt.Sprintf("%s (message template failed: %v)", r.ID, err)
	}
	return b.String()
}
