"""The contract between ingest, aggregator and ClickHouse.

- :mod:`schema.event` -- what a label event is, its rules, and its bytes on
  the Kafka topic.
- :mod:`schema.settings` -- where the contract lives: the events topic and
  the ClickHouse database, read the same way by both services.
- :mod:`schema.keys` -- the keys of the worker's count table: a counter's
  window and counter, and the table's position per partition.
- :mod:`schema.errors` -- the shape of every error answer (the field at
  fault and the rule it broke), which each service's errors extend.
- :mod:`schema.migrations` -- the ClickHouse DDL, versioned, and the views
  every reader goes through.
"""
