-- otawatch read models, version 1. Applied at start by the projector, in
-- order, each statement idempotent (IF NOT EXISTS); applied versions are
-- recorded in schema_migrations (see migrations.sql). Table names are unqualified: the projector
-- runs them in the configured database (clickhouse.database).
--
-- Every table is a ReplacingMergeTree whose sorting key identifies an event
-- (its stream sequence) or a device, so a replay or a redelivery writes the
-- same key again and the copies collapse. Until a background merge has run,
-- copies are visible: read with FINAL, or with argMax/GROUP BY, as the
-- queries in docs/analytics.md do.
--
-- Compatible with ClickHouse 18.16 and current releases: plain DateTime
-- (no DateTime64), no LowCardinality, no Nullable in keys, the
-- ENGINE ... PARTITION BY ... ORDER BY syntax.

-- One row per accepted device report (io.otawatch.shadow.reported.v1) of the
-- SHADOW stream. job_id and wave come from the last shadow.desired event for
-- the device before this report in the stream (empty and 0 when none).
CREATE TABLE IF NOT EXISTS shadow_events (
    stream_seq UInt64,
    event_id String,
    type String,
    type_id String,
    device_id String,
    event_time DateTime('UTC'),
    device_time DateTime('UTC'),
    version String,
    status String,
    checksum String,
    previous_version String,
    duration Float64,
    error_code String,
    job_id String,
    wave UInt32
) ENGINE = ReplacingMergeTree(stream_seq)
PARTITION BY toYYYYMM(event_time)
ORDER BY (type_id, device_id, stream_seq);

-- The other events of the SHADOW stream: desired-state changes
-- (io.otawatch.shadow.desired.v1, with job, wave and target) and presence
-- transitions (io.otawatch.device.presence.v1, state in status), and any
-- type this version does not know, with its raw data.
CREATE TABLE IF NOT EXISTS device_events (
    stream_seq UInt64,
    event_id String,
    type String,
    subject String,
    type_id String,
    device_id String,
    event_time DateTime('UTC'),
    job_id String,
    wave UInt32,
    version String,
    checksum String,
    status String,
    data String
) ENGINE = ReplacingMergeTree(stream_seq)
PARTITION BY toYYYYMM(event_time)
ORDER BY (type_id, device_id, stream_seq);

-- Latest known firmware state per device: the report with the highest SHADOW
-- stream sequence wins (the version column), whatever order rows arrive in.
CREATE TABLE IF NOT EXISTS device_firmware (
    type_id String,
    device_id String,
    stream_seq UInt64,
    event_id String,
    event_time DateTime('UTC'),
    device_time DateTime('UTC'),
    version String,
    status String,
    checksum String,
    previous_version String,
    duration Float64,
    error_code String,
    job_id String,
    wave UInt32
) ENGINE = ReplacingMergeTree(stream_seq)
ORDER BY (type_id, device_id);

-- One row per event of the ROLLOUT stream (rollout.{jobId}.{event}); wave
-- is read from the data when it has one; data keeps the whole event data.
CREATE TABLE IF NOT EXISTS rollout_events (
    stream_seq UInt64,
    event_id String,
    type String,
    source String,
    subject String,
    event_time DateTime('UTC'),
    job_id String,
    event String,
    wave UInt32,
    data String
) ENGINE = ReplacingMergeTree(stream_seq)
PARTITION BY toYYYYMM(event_time)
ORDER BY (job_id, stream_seq);

-- One row per event of the ALERTS stream (alert.{state}.{severity}.{ruleId}).
-- alert_key, job_id, type_id and device_id are read from the data when it
-- has them (empty otherwise); data keeps the whole event data.
CREATE TABLE IF NOT EXISTS alerts (
    stream_seq UInt64,
    event_id String,
    type String,
    source String,
    subject String,
    event_time DateTime('UTC'),
    state String,
    severity String,
    rule_id String,
    alert_key String,
    job_id String,
    type_id String,
    device_id String,
    data String
) ENGINE = ReplacingMergeTree(stream_seq)
PARTITION BY toYYYYMM(event_time)
ORDER BY (rule_id, stream_seq);

-- One row per event of the NOTIFY stream (notify.{receiver}.{outcome});
-- data keeps the whole event data.
CREATE TABLE IF NOT EXISTS notifications (
    stream_seq UInt64,
    event_id String,
    type String,
    source String,
    subject String,
    event_time DateTime('UTC'),
    receiver String,
    outcome String,
    data String
) ENGINE = ReplacingMergeTree(stream_seq)
PARTITION BY toYYYYMM(event_time)
ORDER BY (receiver, stream_seq);
