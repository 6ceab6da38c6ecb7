// Package alerting is the alerting service: it keeps the fleet state (the
// fold of SHADOW) and the rollout jobs (the fold of ROLLOUT), evaluates the
// alert rules (package rules, engine in services/internal/ruleeval) on
// every event and on a tick, and publishes the alert lifecycle on ALERTS.
//
// # Position and restart
//
// The service follows SHADOW and ROLLOUT with the shared consume loop
// (services/internal/consume: ordered consumers, not durables, one
// backoff, one rule for caught up): its position is part of its state, saved with it in the
// JetStream KV bucket snapshot_bucket (default "otawatch_alerting") every
// snapshot_interval. A start restores the snapshot and folds the ALERTS
// events published after it (so an alert raised or resolved after the
// snapshot is known). Each of those says, in headers, at which SHADOW and
// ROLLOUT sequences its turn computed it (position.go): the start replays
// SHADOW and ROLLOUT up to the last one's, publishing nothing, so the
// fleet state and the alert state are those of one point of the log; it
// runs that last turn's event again, publishing what a crash lost of its
// alerts, and then follows the log from there. Alert events have
// deterministic ids (key, severity, start time, state): during that
// catch-up an alert event already on ALERTS is not published again,
// whatever the JetStream duplicate window. The durable names
// events.ConsumerAlertingShadow and ConsumerAlertingRollout are therefore
// not used. Without a snapshot the whole log is read.
//
// # Ticks and presence
//
// Every tick_interval (at multiples of it, on the service's clock,
// svc.Deps.Clock; a test's clock that never fires leaves ticks to Tick)
// devices that owe a report (sent a desired state they
// have not finished, or last seen in_progress) and have been quiet for
// offline_after get a device.presence potentially_offline event,
// published to SHADOW before the state applies it (the copy read back is
// skipped), and tick rules are evaluated with now = the tick time. A
// device that finished its update and then says nothing is idle: it gets
// no event and keeps counting in the success rate, however long it is
// silent (devices report on change). A device is named once per
// transition: the next event about it is its next report, which brings it
// back. Devices that follow the presence contract are not guessed at:
// the bridge stores what the broker says (device.presence online, or
// offline from the device's will), and the fleet state takes that as it
// comes, with no tick. Ticks wait until the service has caught up with
// the log, so a restart after a long stop does not call the whole fleet
// offline.
//
// # Rules
//
// rules_dir is polled every reload_interval (content hashes; there is no
// fsnotify in the module set) and Reload (SIGHUP) reloads at once. A rule
// set that does not load is refused with every problem logged (file, rule,
// line:column) and the old rules keep running.
//
// The rules in force are recorded: at start, and on a reload, a rule set
// that differs from the last one on ALERTS is put there
// (events.TypeRulesLoaded on events.SubjectRulesLoaded) with its files'
// text and the SHADOW and ROLLOUT positions and engine time where it took
// over (rulesrecord.go). Replay (replay.go, `otawatch replay alerting`) runs
// the history through those sets and compares with ALERTS.
//
// # One active instance
//
// Instances share a lease in JetStream KV (lease_bucket). The holder runs
// as described above; the others stand by (Status.Standby, not ready),
// reading nothing, and the one that takes the lease next starts from the
// last snapshot, as a restart does. An instance that loses the lease stops
// at once and leaves the snapshot to the new holder.
//
// # Full streams
//
// Every tick also reads the size of SHADOW, ROLLOUT, ALERTS and NOTIFY,
// which refuse new events at their byte limit (events.StreamConfigs). At
// StreamFullRatio (95%) of its limit a stream gets the built-in critical
// alert stream-full (key stream-full/STREAM), resolved once it is below
// again; the health component StreamFullHealth says the same in /readyz,
// and the raise is logged, because the full stream may be ALERTS itself.
// These alerts are not the rule engine's: a restart reads them back from
// ALERTS.
//
// An event that does not decode, that the engine refuses, or whose
// handling panics goes to REJECTED (rejected.alerting, through the consume
// loop and events.NewRejectedEvent) with the reason, and the service goes
// on. A poison message read again after a restart is recorded again once
// the duplicate window has passed.
//
// # Files
//
// service.go is the Service and its Status; active.go the active term
// (the followers' handler and the loop of ticks, reloads and snapshots,
// which take turns on the state under one lock); snapshot.go the snapshot
// and the restore; position.go where an alert was computed and the
// restart's catch-up to it; publish.go the publishes awaited before a
// turn ends;
// watch.go the rule reloads; rulesrecord.go the record of the rules in
// force; replay.go the replay against ALERTS; streamfull.go the
// stream-full alerts.
package alerting
