-- Hourly roll-ups: the same counters as daily_counts, per hour of the day,
-- so a dashboard can draw today's shape. `hour` is the UTC start of the
-- local hour (TALLY_DAY_TZ); `day` is the local day it belongs to. Same rules
-- as daily_counts: absolute counts, highest version wins, read the view.
CREATE TABLE IF NOT EXISTS hourly_counts (
    day Date,
    hour DateTime('UTC'),
    label String,
    category String,
    dom_id String,
    counter UInt64,
    version UInt64,
    written_at DateTime
) ENGINE = ReplacingMergeTree(version)
PARTITION BY toYYYYMM(day)
ORDER BY (day, hour, label, category, dom_id);

CREATE VIEW IF NOT EXISTS hourly_stats AS
SELECT
    day,
    hour,
    label,
    category,
    dom_id,
    argMax(counter, version) AS counter,
    max(written_at) AS written_at
FROM hourly_counts
GROUP BY day, hour, label, category, dom_id;
