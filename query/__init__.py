"""The read side: counts out of ClickHouse's views, for the seed's heat map, the API and the stats page.

A read passes these modules in this order:

- :mod:`query.api`       the routes (mounted by the HTTP process when ``TALLY_INGEST_ROUTES`` has ``query``)
- :mod:`query.auth`      a bearer token with read scope (``/get_stats/`` may be public)
- :mod:`query.params`    ``/api/v1``'s parameters, or a 400 naming the field and the rule
- :mod:`query.counts`    parameterised SQL on the ``*_stats`` views (:mod:`query.heatmap`: ``/get_stats/``'s)
- :mod:`query.cache`     identical queries within ``TALLY_API_CACHE_TTL_S`` share one answer
- :mod:`query.store`     the ClickHouse connection pool that runs the SQL
- :mod:`query.counts`    the rows back into counts, with their total and freshness
- :mod:`query.answer`    JSON or CSV, saying how fresh the counts are; or the error met on the way

Beside them: :mod:`query.settings` (every limit and token, read once at
startup), :mod:`query.errors` (what a read can refuse with, and its HTTP
status) and :mod:`query.openapi` (``/api/v1/openapi.json``, built from the
same parameter specs that :mod:`query.params` checks).
"""
