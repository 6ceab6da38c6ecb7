package rollout

import (
	"time"

	"github.com/otawatch/otawatch/events"
)

// View is a job as show and list print it: its folded state plus each
// wave's live progress from the fleet at now, the open wave's live gate
// decision, and for an aborted job the retained desired state cleared and
// still to clear. withWaves adds the per-wave detail.
//
// Each wave's progress is waves.Ledger.Progress, the function the api
// service's dashboard counts with too: every wave of the plan, its
// exclusive states adding up to its size in the plan from the start, so
// the CLI's show, GET /api/v1/rollouts/{job} (both this view) and the
// dashboard agree once they have applied the same events.
func View(j *Job, fv FleetView, now time.Time, extra ExtraGate, withWaves bool) events.RolloutJob {
	v := events.RolloutJob{
		ID: j.ID, Status: j.Status, Spec: j.Spec, CreatedAt: j.CreatedAt, StartedAt: j.StartedAt,
		FinishedAt: j.FinishedAt, UpdatedAt: j.UpdatedAt, Reason: j.Reason, By: j.By,
		Wave: j.Wave, WaveCount: len(j.Plan), Attempts: j.Attempt,
	}
	v.Retracted, v.RetractPending = RetractCounts(j, fv)
	for i := range j.Plan {
		w := i + 1
		ws := j.Waves[i]
		rw := events.RolloutWave{Wave: w, StartedAt: ws.StartedAt, GatedAt: ws.GatedAt, CompletedAt: ws.CompletedAt, Gate: ws.Gate}
		rw.Progress = Progress(j, w, fv, now)
		switch {
		case w > j.Wave:
			rw.Status = events.WavePlanned
		case !ws.CompletedAt.IsZero():
			rw.Status = events.WaveCompleted
		case !ws.GatedAt.IsZero():
			rw.Status = events.WaveSoaking
		default:
			rw.Status = events.WaveOpen
			g := Gate(j, w, rw.Progress, now, extra)
			if reason, breach := policyBreach(j, w, rw.Progress); breach && w != j.PolicyWaived {
				g.Reason += "; " + reason
			}
			rw.Gate = &g
		}
		v.Total = v.Total.Add(rw.Progress)
		if withWaves {
			v.Waves = append(v.Waves, rw)
		}
	}
	return v
}

func (s *Service) viewLocked(j *Job, now time.Time, withWaves bool) events.RolloutJob {
	var extra ExtraGate
	if withWaves {
		extra = s.extraGateLocked(j)
	}
	return View(j, s.fleet, now, extra, withWaves)
}
