"""The aggregator: a Faust worker counting label events into ClickHouse.

An event goes through one module per stage:

    decode  -> Kafka message bytes into LabelEvents (schema.event)
    count   -> per (day, label, category, dom_id), exactly once, in a Faust table
    rollup  -> the counters that changed, as absolute daily rows
    write   -> into ClickHouse, idempotently

``app`` assembles them into a Faust app; ``settings`` is what it reads.
"""
