package rollout

import (
	"fmt"
	"math"
	"time"

	"github.com/otawatch/otawatch/events"
	"github.com/otawatch/otawatch/services/internal/waves"
)

// Pending is an event a command or Decide wants appended to the job.
type Pending struct {
	Type string
	Data events.RolloutData
}

// The device states the retry-failed command picks (package waves has them
// all: the one definition the api's dashboard counts with too).
const (
	stFailed   = waves.Failed
	stTimedOut = waves.TimedOut
)

// classify is one device's state in the job at now (waves.Ledger.DeviceState).
func classify(j *Job, ref events.DeviceRef, fv FleetView, now time.Time) waves.State {
	return j.DeviceState(ref, fv, now)
}

// Progress is a wave's devices by state at now (wave is 1-based), as
// waves.Ledger.Progress counts them: Targeted is the wave's size in the
// plan, whether or not the wave has started.
func Progress(j *Job, wave int, fv FleetView, now time.Time) events.WaveProgress {
	return j.Ledger.Progress(wave, fv, now)
}

// ExtraGate evaluates a job's extra (CEL) gate for a wave; nil means the job
// has none. reason explains a false or failed evaluation.
type ExtraGate func(j *Job, wave int, p events.WaveProgress, now time.Time) (ok bool, reason string)

// Gate decides whether a wave passes: every device sent, and at least
// Spec.Gate of its online devices completed (a wave with no online device
// passes: its devices get the retained desired state when they return), and
// the extra gate holds.
func Gate(j *Job, wave int, p events.WaveProgress, now time.Time, extra ExtraGate) events.GateDecision {
	online := p.Targeted - p.Offline
	required := int(math.Ceil(j.Spec.Gate*float64(online) - 1e-9))
	g := events.GateDecision{Online: online, Completed: p.Completed, Required: required}
	pct := fmt.Sprintf("%g%%", j.Spec.Gate*100)
	switch {
	case p.Queued > 0:
		g.Reason = fmt.Sprintf("sending: %d of %d devices still queued", p.Queued, p.Targeted)
		return g
	case online == 0:
		g.Passed = true
		g.Reason = fmt.Sprintf("no online device (all %d offline); gate %s passes", p.Offline, pct)
	case p.Completed >= required:
		g.Passed = true
		g.Reason = fmt.Sprintf("%d of %d online devices completed; gate %s needs %d", p.Completed, online, pct, required)
	default:
		g.Reason = fmt.Sprintf("%d of %d online devices completed; gate %s needs %d", p.Completed, online, pct, required)
		return g
	}
	if extra != nil {
		ok, why := extra(j, wave, p, now)
		g.CEL = &ok
		if !ok {
			g.Passed = false
			g.Reason += "; cel gate: " + why
		} else {
			g.Reason += "; cel gate holds"
		}
	}
	return g
}

// policyBreach returns the failure policy's reason when a wave crossed it:
// at least MinFinished devices finished (completed, failed or timed out),
// and more than MaxFailure of the wave's online devices failed or timed
// out. The share is of the wave, not of the devices finished so far:
// failures come early (a bad download fails in seconds, an install takes
// minutes), so a share of the finished ones overstates the failure rate
// until the wave is nearly done and would pause healthy rollouts. With the
// default gate (0.9) and MaxFailure (0.1), the policy trips exactly when
// the gate can no longer pass.
func policyBreach(j *Job, wave int, p events.WaveProgress) (string, bool) {
	finished := p.Completed + p.Failed + p.TimedOut
	bad := p.Failed + p.TimedOut
	online := p.Targeted - p.Offline
	if finished == 0 || finished < j.Spec.MinFinished || online == 0 {
		return "", false
	}
	rate := float64(bad) / float64(online)
	if rate <= j.Spec.MaxFailure {
		return "", false
	}
	return fmt.Sprintf("failure policy: wave %d has %d failed and %d timed out of %d online devices (%.1f%% > %g%%)",
		wave, p.Failed, p.TimedOut, online, rate*100, j.Spec.MaxFailure*100), true
}

// Decide returns the events a running job needs at now, given the fleet:
// the first wave's start, a pause or abort by the failure policy, a wave's
// gate passing, its completion after the soak, and the next wave's start or
// the job's completion. It is pure: the same state, fleet and now give the
// same events, and it reads no clock.
func Decide(j *Job, fv FleetView, now time.Time, extra ExtraGate) []Pending {
	if j.Status != events.RolloutRunning || len(j.Plan) == 0 {
		return nil
	}
	data := func(wave int) events.RolloutData { return events.RolloutData{JobID: j.ID, Wave: wave} }
	if j.Wave == 0 {
		return []Pending{{events.TypeRolloutWaveStarted, data(1)}}
	}
	w := j.Wave
	if w > len(j.Waves) {
		return nil // the fold refuses such a wave; never index past the plan
	}
	ws := j.Waves[w-1]
	next := func() Pending {
		if w == len(j.Plan) {
			return Pending{events.TypeRolloutJobCompleted, data(0)}
		}
		return Pending{events.TypeRolloutWaveStarted, data(w + 1)}
	}
	if !ws.CompletedAt.IsZero() {
		// A crash between appending wave_completed and what follows it.
		return []Pending{next()}
	}
	p := Progress(j, w, fv, now)
	if w != j.PolicyWaived {
		if reason, breach := policyBreach(j, w, p); breach {
			d := data(w)
			d.Reason, d.By = reason, events.ByFailurePolicy
			if j.Spec.OnFailure == events.OnFailureAbort {
				return []Pending{{events.TypeRolloutJobAborted, d}}
			}
			return []Pending{{events.TypeRolloutJobPaused, d}}
		}
	}
	var out []Pending
	gatedAt := ws.GatedAt
	if gatedAt.IsZero() {
		g := Gate(j, w, p, now, extra)
		if !g.Passed {
			return nil
		}
		d := data(w)
		d.Gate, d.Progress, d.Reason = &g, &p, g.Reason
		out = append(out, Pending{events.TypeRolloutWaveGated, d})
		gatedAt = now
	}
	if soak := time.Duration(j.Spec.Soak); soak > 0 && now.Sub(gatedAt) < soak {
		return out
	}
	d := data(w)
	d.Progress = &p
	return append(out, Pending{events.TypeRolloutWaveCompleted, d}, next())
}
