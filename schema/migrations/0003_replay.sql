-- Rebuilding past days (`tally replay`): counts recomputed from the events
-- topic land here first, one partition per replay run, are checked, and are
-- then copied into daily_counts/hourly_counts one day at a time with a
-- version above every live one (see aggregator/replay.py).
CREATE TABLE IF NOT EXISTS daily_counts_replay (
    replay_id UInt64,
    day Date,
    label String,
    category String,
    dom_id String,
    counter UInt64
) ENGINE = MergeTree
PARTITION BY replay_id
ORDER BY (day, label, category, dom_id);

CREATE TABLE IF NOT EXISTS hourly_counts_replay (
    replay_id UInt64,
    day Date,
    hour DateTime('UTC'),
    label String,
    category String,
    dom_id String,
    counter UInt64
) ENGINE = MergeTree
PARTITION BY replay_id
ORDER BY (day, hour, label, category, dom_id);

-- A replay writes 0 for a counter that the topic no longer supports (a
-- corrupted or invented row); the views leave such counters out.
DROP TABLE IF EXISTS daily_stats;

CREATE VIEW daily_stats AS
SELECT
    day,
    label,
    category,
    dom_id,
    argMax(counter, version) AS counter,
    max(written_at) AS written_at
FROM daily_counts
GROUP BY day, label, category, dom_id
HAVING counter > 0;

DROP TABLE IF EXISTS hourly_stats;

CREATE VIEW hourly_stats AS
SELECT
    day,
    hour,
    label,
    category,
    dom_id,
    argMax(counter, version) AS counter,
    max(written_at) AS written_at
FROM hourly_counts
GROUP BY day, hour, label, category, dom_id
HAVING counter > 0;
