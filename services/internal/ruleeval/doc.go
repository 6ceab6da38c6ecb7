// Package ruleeval evaluates otawatch's alert rules (package rules) over the
// fleet fold (package fleet): it builds the rule variables from the fold,
// tracks rollout jobs from the ROLLOUT stream, and runs the alert lifecycle
// (pending, raised, resolved, escalated). The alerting service, `otawatch
// rules test` and `otawatch rules backtest` all run this one Engine, so a
// test or a backtest computes what the live service computes; the rollout
// service uses DeviceVars, FleetVars and RolloutVars for its extra CEL gate.
//
// The engine is in three files along its seams: engine.go is the state
// and the fold (ApplyShadow, ApplyRollout, Tick), eval.go the evaluation
// of rules and the alert lifecycle, snapshot.go the state's way out and
// back in (Snapshot, UnmarshalJSON, Restore). history.go reads recorded
// history once through (Replay, Backtest, the ALERTS fold of a restart),
// swapping in the rule sets that took over during it (RuleSwitch);
// recorded.go loads a rule set from its files' text, the form the alerting
// service records it in; compare.go replays through the recorded sets and
// diffs the alert events with ALERTS (Compare, DiffAlerts). Following the
// live log is services/internal/consume's job.
//
// It lives under services/internal, not in rules, because Go allows only
// packages under services/ to import services/internal/fleet.
package ruleeval
