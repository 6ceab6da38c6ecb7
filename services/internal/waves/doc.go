// Package waves is the one definition of a rollout wave's progress. Each
// device of a job's plan is in exactly one state (queued, pending, in
// progress, completed, failed, timed out, offline), so a wave's counts add
// up to the devices the plan gave it, from the moment the job starts.
//
// Progress reads two folds: the job's ROLLOUT events (Ledger: the plan and
// which sends the broker acknowledged) and the fleet state folded from
// SHADOW (fleet.State: what each device reported since its desired state).
// The rollout service's gates and show, and so the CLI's rollout show and
// the API's GET /api/v1/rollouts/{job}, and the api service's dashboard all
// count with it; two processes that have applied the same events give the
// same numbers.
package waves
