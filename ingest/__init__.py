"""The ingest service: beacons in, label events on Kafka, stats out.

A beacon goes through one module per stage, assembled in :mod:`ingest.pipeline`:

    parse     -> the ``labels`` syntax, or a JSON body, into raw fields
    validate  -> limits and field rules into LabelEvents (schema.event)
    guard     -> bots, the label allow-list, the daily cap of new labels
    publish   -> onto the Kafka topic, answered only once the brokers acked

``outcome`` says what became of each event (drop reasons), ``answer`` how
ingest answers (JSON, or a GIF), ``errors`` what can go wrong and its HTTP
status. ``track`` holds the beacon routes, ``client`` the backend's
``Tracker``, ``query`` the read side, ``app`` assembles the routes with the
clients they share.
"""
