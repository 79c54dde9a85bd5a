-- Daily roll-ups: one row per (day, label, category, dom_id) per write.
--
-- Workers write the ABSOLUTE count of a counter, never an increment, with a
-- version that grows with every event counted (the Kafka offset of the last
-- event in it). Writing a row twice, or an older row after a newer one,
-- therefore never changes the answer: readers take the row with the highest
-- version. ReplacingMergeTree eventually keeps only that row on disk, but
-- merges happen whenever ClickHouse likes, so nobody reads this table
-- directly: read `daily_stats` below.
CREATE TABLE IF NOT EXISTS daily_counts (
    day Date,
    label String,
    category String,
    dom_id String,
    counter UInt64,
    version UInt64,
    written_at DateTime
) ENGINE = ReplacingMergeTree(version)
PARTITION BY toYYYYMM(day)
ORDER BY (day, label, category, dom_id);

-- The one correct number per counter, whether or not ClickHouse has merged.
-- Query it with enable_optimize_predicate_expression = 1 on ClickHouse 18.x so
-- a WHERE on day/label/dom_id is applied before the GROUP BY (current
-- versions do that by default).
CREATE VIEW IF NOT EXISTS daily_stats AS
SELECT
    day,
    label,
    category,
    dom_id,
    argMax(counter, version) AS counter,
    max(written_at) AS written_at
FROM daily_counts
GROUP BY day, label, category, dom_id;
