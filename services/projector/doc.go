// Package projector writes the event log into ClickHouse, the read model
// analysts query (see README.md for the tables and the SQL).
//
// # Flow
//
// One durable pull consumer per stream (events.ConsumerProjectorShadow,
// ...Rollout, ...Alerts, ...Notify; explicit ack), each followed by the
// shared consume loop in batch mode (consume.Batcher): a reader goroutine
// decodes each envelope once (events.Decode) and projects it to its row, in
// delivery order, while earlier batches are written. A batch is written when
// it holds clickhouse.batch_size rows or clickhouse.batch_timeout after its
// first row, whichever comes first (every insert makes a part on the server,
// so small inserts are what ClickHouse handles worst); two batches of a
// stream are written at once, each to every table it has rows for in
// parallel, and a batch's messages are acked only after ClickHouse accepted
// every row of it and every batch before it was acked.
//
// # Failures
//
// ClickHouse down, busy or missing the schema: the consume loop writes the
// batch again after its backoff (the held messages are kept in progress so
// JetStream does not redeliver them meanwhile), the service reports not
// ready under "projector", nothing is acked, and the batch goes in when
// ClickHouse is back. An event that does not decode, or a row ClickHouse
// refuses on its own (found by bisecting the refused batch), is poison: the
// consume loop records it on REJECTED (events.RejectedSubject("projector"),
// with the stream, sequence, raw bytes and reason) and terminates it, and
// the projector moves on. So does an event whose projection panics.
//
// # Idempotence
//
// Every table is a ReplacingMergeTree keyed by the event's stream sequence
// (device_firmware: by device, with the stream sequence as the version, so
// the newest report wins whatever order rows arrive in). Rows are computed
// from the log alone: the time is the event's, and a report's job and wave
// come from the SHADOW stream's desired-state events before it, folded by
// stream sequence, with every desired event read at start. So a redelivery
// after a crash between insert and ack, or a replay of any range, writes rows
// identical to those already there; they collapse in background merges, and
// the documented queries read with FINAL or argMax meanwhile, so their
// answers do not change.
//
// # Several instances
//
// Projectors started with the same database share the durable consumers:
// JetStream hands each message to one of them (work-queue semantics), so
// they split every stream's events and each writes its own batches. Rows
// do not depend on which instance writes them, with one exception taken
// care of: a report's job and wave need every desired event before it,
// and the other instance may have been delivered some of those. The desired
// index therefore knows up to which sequence it is complete; a batch whose
// reports lie past it first reads the missing desired events from SHADOW
// (an ordered consumer on shadow.desired.>, from there on), then looks the
// jobs up. One instance, or a replay, is delivered every event in order and
// never needs the read.
//
// # Replay
//
// Replay re-projects chosen streams from a sequence or a time with the same
// loop on ordered consumers (the durable consumers are not touched; nothing
// is recorded on REJECTED again) into the live database or a fresh one; Verify compares two databases table by table, with row
// counts and content checksums over the deduplicated view, and names the
// rows that differ. "otawatch replay projector" and "otawatch replay verify"
// are their commands.
//
// # Schema
//
// The DDL is schemas/clickhouse/NNNN_*.sql, embedded (package chschema) and
// applied at start by Migrate: files not yet recorded in schema_migrations
// run in order, each statement idempotent. It runs on ClickHouse 18.16 and
// on current releases.
package projector
