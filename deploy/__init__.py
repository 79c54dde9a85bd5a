"""The local stack, without Docker: Kafka and ClickHouse installed and run on
loopback by the project's own code, plus the ``tally`` command that drives it.

- :mod:`deploy.processes` -- starting, finding and stopping background processes
- :mod:`deploy.kafka`      -- the broker from Maven Central jars, KRaft, and topics
- :mod:`deploy.clickhouse` -- Debian's clickhouse-server with our config
- :mod:`deploy.stack`      -- the whole stack: up, down, status
- :mod:`deploy.cli`        -- ``tally up|down|status|migrate|ingest|worker``
"""
