"""The aggregator: a Faust worker counting label events into ClickHouse.

An event goes through one module per stage:

    consume  -> the events topic read in batches off Faust's fetch loop
    complete -> holes in what was delivered read again from Kafka (gaps)
    decode   -> Kafka message bytes into LabelEvents (schema.event)
    count    -> per (window, label, category, dom_id), exactly once, in a Faust table (table)
    rollup   -> the counters that changed, as absolute rows
    write    -> into ClickHouse, idempotently

``batch`` runs complete to rollup for each batch; ``commit`` acknowledges a
batch once Kafka holds its changelog, never past what was counted;
``recovery`` restarts what stalled; ``web`` serves /metrics, /healthz and
/readyz; ``faust_internals`` is the one module that reaches below Faust's
public API. ``app`` assembles them into a Faust app; ``settings`` is what it
reads. ``replay`` and ``reset`` rebuild counts from the topic (``tally
replay``, ``tally reset``).
"""
