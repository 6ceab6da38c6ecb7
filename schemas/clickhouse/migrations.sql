-- The table that records which numbered schema files were applied, created
-- before any of them. One row per applied file; a copy written by two
-- projectors starting at once collapses on the version.
CREATE TABLE IF NOT EXISTS schema_migrations (
    version UInt32,
    name String,
    applied_at DateTime('UTC')
) ENGINE = ReplacingMergeTree(applied_at)
ORDER BY version;
