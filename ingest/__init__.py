"""The ingest service: beacons in, label events on Kafka, stats out.

A beacon goes through one module per stage:

    parse     -> the seed's ``labels`` syntax into raw fields
    validate  -> field rules and request limits into LabelEvents (schema.event)
    publish   -> onto the Kafka topic, answered only once the brokers acked

``track`` holds the HTTP routes that chain them, ``query`` the read side,
``app`` assembles both with the clients they share.
"""
