// Package ruleeval evaluates otawatch's alert rules (package rules) over the
// fleet fold (package fleet): it builds the rule variables from the fold,
// tracks rollout jobs from the ROLLOUT stream, and runs the alert lifecycle
// (pending, raised, resolved, escalated). The alerting service, `otawatch
// rules test` and `otawatch rules backtest` all run this one Engine, so a
// test or a backtest computes what the live service computes; the rollout
// service uses DeviceVars, FleetVars and RolloutVars for its extra CEL gate.
//
// It lives under services/internal, not in rules, because Go allows only
// packages under services/ to import services/internal/fleet.
package ruleeval
