"""The local stack, without Docker: Kafka and ClickHouse installed and run on loopback, for development,
tests and benchmarks. Dev tooling: it does not ship in the wheel or the image."""
