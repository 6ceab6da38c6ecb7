package rollout

import (
	"context"
	"time"

	"github.com/otawatch/otawatch/events"
	"github.com/otawatch/otawatch/rules"
	"github.com/otawatch/otawatch/services/internal/fleet"
	"github.com/otawatch/otawatch/services/internal/ruleeval"
)

// celGate is a job's compiled extra gate.
type celGate struct {
	expr string
	cond *rules.Condition
	err  error
}

// checkCEL compiles a CEL gate expression: it must be bool and name only
// the documented variables (fleet, rollout, event, now; see
// `otawatch rules vars`).
func checkCEL(expr string) error {
	_, err := rules.CompileCondition("cel-gate", expr)
	return err
}

// extraGateLocked returns the job's extra gate, nil when it has none. The
// gate sees the same variables as an alert rule on a tick: `fleet` (the
// fleet metrics), `rollout` (this job and its open wave's counts), `event`
// ({kind: "tick", time}) and `now`.
func (s *Service) extraGateLocked(j *Job) ExtraGate {
	if j.Spec.CELGate == "" {
		return nil
	}
	g := s.gates[j.ID]
	if g == nil || g.expr != j.Spec.CELGate {
		g = &celGate{expr: j.Spec.CELGate}
		g.cond, g.err = compileCELGate(j.ID, j.Spec.CELGate)
		s.gates[j.ID] = g
	}
	return CELGate(g.cond, g.err, s.fleet)
}

// compileCELGate compiles a job's CEL gate, named for the job in errors;
// the driver and the replays (replay.go, whatif.go) compile it here.
func compileCELGate(jobID, expr string) (*rules.Condition, error) {
	return rules.CompileCondition("cel-gate of job "+jobID, expr)
}

// CELGate is an ExtraGate evaluating cond (compiled with compileErr) over
// the fleet. An evaluation error holds the gate shut and says why: a gate
// that cannot be evaluated must not pass.
func CELGate(cond *rules.Condition, compileErr error, f *fleet.State) ExtraGate {
	return func(j *Job, wave int, _ events.WaveProgress, now time.Time) (bool, string) {
		if compileErr != nil {
			return false, compileErr.Error()
		}
		var waveStarted time.Time
		if wave >= 1 && wave <= len(j.Waves) {
			waveStarted = j.Waves[wave-1].StartedAt
		}
		job := ruleeval.Job{ID: j.ID, Status: j.Status, TargetVersion: j.Spec.Target.Version, Wave: wave,
			CreatedAt: j.CreatedAt, StartedAt: j.StartedAt, WaveStartedAt: waveStarted}
		vars := rules.Vars{
			Event:   map[string]any{"kind": rules.KindTick, "time": now},
			Fleet:   ruleeval.FleetVars(f.Metrics()),
			Rollout: ruleeval.RolloutVars(job, f.Wave(j.ID, wave)),
			Now:     now,
		}
		ctx, cancel := context.WithTimeout(context.Background(), rules.DefaultEvalTimeout)
		defer cancel()
		ok, err := cond.Eval(ctx, vars)
		if err != nil {
			return false, err.Error()
		}
		if !ok {
			return false, cond.String() + " is false"
		}
		return true, ""
	}
}
