// Package audit makes the log tamper-evident and exportable for an
// auditor.
//
// Every stream but AUDIT has a hash chain over its stored messages
// (events.ChainNext). The audit service (one active instance, behind a
// lease) follows each stream and writes the chain head to the AUDIT stream
// every CheckpointEvery events or CheckpointInterval, as
// audit.checkpoint.{stream} events. AUDIT refuses delete and purge like the
// streams it vouches for, so a changed, removed or inserted event no longer
// leads to the recorded head.
//
// Export writes the events of a time range with their chain values and a
// manifest (range, counts, chain heads at both ends, the checkpoints inside
// the range, the SHA-256 of every file, optionally an Ed25519 signature);
// Verify checks such a directory on its own and, given the live streams,
// against them, naming the first event that does not match.
package audit
