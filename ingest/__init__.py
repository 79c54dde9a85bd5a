"""The ingest service: beacons in, label events on Kafka (the process also mounts the read side, :mod:`query`).

A beacon goes through one module per stage, assembled in :mod:`ingest.pipeline`:

    parse     -> the ``labels`` syntax, or a JSON body, into raw fields
    validate  -> limits and field rules into LabelEvents (schema.event)
    guard     -> bots, the label allow-list, the daily cap of new labels
    publish   -> onto the Kafka topic, answered only once the brokers acked

``outcome`` says what became of each event (drop reasons), ``answer`` how
ingest answers (JSON, or a GIF), ``errors`` what can go wrong and its HTTP
answer. ``track`` holds the beacon routes (``inflate`` undoes a body's
gzip or deflate), ``protocol`` the HTTP protocol ``tally ingest`` serves
with (one write per answer, the header limit), ``client`` the backend's
``Tracker``, ``app`` assembles the routes with the clients they share.
Publishing: ``publish`` (the publisher, its bounded waits and the outage
breaker), ``batches`` (records straight into the producer's batches),
``partition`` (which partition a counter goes to), ``kafka_internals``
(every private name of kafka-python ingest uses, for the version pinned).
"""
