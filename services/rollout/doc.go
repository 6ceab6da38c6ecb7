// Package rollout is the rollout service: wave-by-wave firmware rollouts
// whose state is the fold of the ROLLOUT stream, gated on the fleet state
// folded from SHADOW.
//
// # State and decisions
//
// A job's state is Apply folded over its events (rollout.{jobId}.{event}).
// Commands (create, start, pause, resume, abort, retry-failed) are checked
// against that state by Command, which returns the events to append or a
// CommandError saying why not ("cannot pause job X: it is completed").
// Decide(job, fleet, now) is the driver's pure step: the first wave's
// start, the failure policy's pause or abort, a wave's gate passing
// (wave_gated, with the decision and its reason), the wave's completion
// after the soak, and the next wave's start or the job's completion. Time
// comes from the events and from the tick, never from a clock inside the
// logic, so tests run it on a fake clock and a replay decides what the live
// run decided.
//
// Every append expects the job's last event (JetStream's expected last
// sequence for the subject filter rollout.{jobId}.>), so two instances
// cannot interleave inconsistent events: the loser folds what the winner
// wrote and decides again.
//
// # Gates
//
// A wave passes when every device of it was sent its desired state and at
// least Gate of its online devices completed, and the optional CEL gate
// holds. "Online" leaves out potentially offline devices that have not
// reported since their desired state was sent; a device that started and
// then went silent stays in, and times out, so a firmware that bricks
// devices cannot pass by taking them offline. The failure policy looks at
// the open wave: once MinFinished devices finished (completed, failed or
// timed out), more than MaxFailure of its online devices failed or timed
// out pauses or aborts the job. The share is of the wave, not of the
// devices finished so far, because failures come early (see policyBreach). Resuming a job the policy paused waives the policy for that wave
// (the operator has seen it); the gate still applies. Reports that come
// after a wave closed still count in show: the counts come from the fleet
// state, not from the closing snapshot.
//
// # Desired state, exactly once per device
//
// For each device of a started wave, under the job's rate limit, the
// driver records the shadow.desired event (SHADOW, Nats-Msg-Id from job,
// device, target and attempt), then publishes the delta (MQTT QoS 1,
// retained), then records devices_sent for what the broker acknowledged.
// Record first: no device gets a desired state the log lacks, and the
// desired event precedes in SHADOW every report it causes. A crash between
// record and mark leaves devices whose send is unknown; the next driver
// looks for their deltas among the broker's retained messages (same job,
// same timestamp) and marks those found instead of sending again. Only a
// broker that acknowledged a publish and then lost the retained copy (or
// answers slower than rollout.retained_wait) makes a device receive its
// desired state twice, and the retained, identical delta is harmless to it.
//
// # Abort
//
// An aborted job (by command, or by the failure policy) sends nothing more,
// and the driver takes back what it sent: every device that was sent the
// job's delta (marked sent, or its desired event recorded) and has reported
// neither completed nor failed since gets a zero-length retained message on
// its delta topic, which deletes the retained delta, under the job's rate
// limit; devices_retracted records the clears the broker acknowledged.
// Clearing is idempotent, so nothing is recorded before it: a restarted
// driver clears the unrecorded ones again (Retractions lists them from the
// fold and the fleet). A device that a later job has sent its own desired
// state is left alone. The shadow delta (the delta command, and GET
// .../shadow/delta in the api service) is empty for a device whose job is
// aborted, and show counts the clears done and pending.
//
// An abort cannot stop a device that is already installing: it has the
// delta, and finishing (or failing) the update is up to the device; it
// reports as usual and counts in show. A device subscribed with a
// persistent session that was offline gets its queued copy of the delta
// too (MQTT 3.1.1 cannot recall a queued message), followed by the empty
// message: a device should drop a desired state it has not started when an
// empty message follows, or confirm with the HTTP delta before installing.
//
// # One driver
//
// Every instance folds both streams and answers commands (a queue group on
// otawatch.rollout.cmd.*). Only the holder of one JetStream KV lease (key
// "driver" in bucket rollout.lease_bucket, bucket-wide TTL, renewed with
// Update(rev)) decides and sends; it steps down on its own clock two thirds
// of the TTL after its last renewal, before the key can expire under it.
// One lease covers all jobs: a job's work is rate-limited sends, and one
// driver keeps all of them under one view of the broker. A clean stop
// releases the lease at once; a killed driver's lease expires after the
// TTL, and another instance takes over where the events say.
//
// # Consumers
//
// Each instance reads SHADOW and ROLLOUT with the shared consume loop
// (services/internal/consume: ordered, ephemeral consumers from the start
// of the streams, one backoff, one caught-up rule), and neither decides nor
// answers before both have caught up with where the streams were when it
// started; /readyz says how far they are. An event either fold can never
// apply (it does not decode, Apply refuses it, the fold panics) is recorded
// on REJECTED (rejected.rollout) with the reason, and the fold goes on. A
// shared durable consumer would split the events between instances, while
// each needs all of them; events.ConsumerRolloutShadow stays reserved for a
// durable consumer that resumes from a snapshot.
//
// # Replay and what-if
//
// Because Decide is pure and takes its time from the tick, a job's log is
// enough to decide again. Replay (replay.go, "otawatch replay rollout")
// folds a job's ROLLOUT events and the SHADOW stream as the driver did and
// checks every recorded decision against Decide at the decision's own
// time, allowing the driver's fold to have lagged the stream by up to a
// bound; it names a decision that differs, came late or is missing.
// WhatIf (whatif.go, "otawatch rollout what-if") runs a recorded job again
// under other settings in a discrete-event simulation on a virtual clock:
// the driver's tick (Decide, then the rate-limited sends) at the recorded
// ticks and on the ticker's grid between them, each device's recorded
// reports at their offsets from the simulated send. ReadRecording reads
// what both need from the streams.
//
// # Building it
//
// New(cfg, deps) applies the defaults, validates, and returns a
// *conf.Error listing every problem. The driver's tick and the lease's
// step-down timer read deps.Clock (svc.Clock, the wall clock when nil);
// event handlers take the events' time. rollout.instance names the lease
// holder (a random name per start when empty).
package rollout
