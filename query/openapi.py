"""The OpenAPI 3.0 document of the read API, built from the parameter specs of :mod:`query.params`.

It also describes the beacon routes (``/track/``, ``/track.gif``) when the
same process serves them (:mod:`ingest.track`): their parameters, the
idempotency key (its rule from :mod:`schema.event`) and their answers.
"""

from __future__ import annotations

from typing import Any

from query.heatmap import MAX_DOM_IDS_PER_QUERY
from query.params import ENDPOINT_PARAMS, GROUP_KEYS, MAX_VALUES_PER_FILTER, PARAMS
from query.settings import QuerySettings
from schema.event import IDEMPOTENCY_KEY_RULE, MAX_IDEMPOTENCY_KEY_LEN

SUMMARIES = {
    "counts": (
        "Counts, filtered and grouped",
        "Counts of the counters matching every filter given, grouped by `group_by` (any of day, hour, label, "
        "category, dom_id); without `group_by`, one row: the total. Hours come from the hourly counts.",
    ),
    "top": ("The highest counts", "The `n` labels (or categories, or dom ids: `by`) with the highest counts."),
    "labels": ("Known labels", "The labels counted in the range, with their counts, by name."),
    "categories": ("Known categories", "The categories counted in the range (empty: none), with their counts."),
}

ERROR = {
    "type": "object",
    "required": ["error", "message"],
    "properties": {
        "error": {"type": "string"},
        "field": {"type": "string", "description": "The parameter (or header) at fault."},
        "rule": {"type": "string", "description": "The rule it broke."},
        "message": {"type": "string"},
    },
}

ROW = {
    "type": "object",
    "required": ["counter"],
    "properties": {
        "day": {"type": "string", "format": "date"},
        "hour": {"type": "string", "format": "date-time", "description": "UTC start of the (local) hour."},
        "label": {"type": "string"},
        "category": {"type": "string"},
        "dom_id": {"type": "string"},
        "counter": {"type": "integer", "minimum": 0},
    },
    "additionalProperties": False,
}

COUNTS = {
    "type": "object",
    "required": ["from", "to", "group_by", "rows", "total", "truncated", "fresh_as_of"],
    "properties": {
        "from": {"type": "string", "format": "date"},
        "to": {"type": "string", "format": "date"},
        "group_by": {"type": "array", "items": {"type": "string", "enum": list(GROUP_KEYS)}},
        "rows": {"type": "array", "items": {"$ref": "#/components/schemas/Row"}},
        "total": {"type": "integer", "minimum": 0, "description": "The sum of every matching counter."},
        "truncated": {"type": "boolean", "description": "More rows matched than the limit."},
        "fresh_as_of": {
            "type": "string",
            "format": "date-time",
            "nullable": True,
            "description": "The latest roll-up these counts reflect (the worker's written_at); null: none matched.",
        },
    },
}

FRESH_HEADER = {
    "description": "The latest roll-up the answer reflects (absent when nothing matched).",
    "schema": {"type": "string", "format": "date-time"},
}


def _error(description: str) -> dict[str, Any]:
    schema = {"$ref": "#/components/schemas/Error"}
    return {"description": description, "content": {"application/json": {"schema": schema}}}


ERRORS = {
    "400": _error("A parameter broke a rule; `field` and `rule` say which and how."),
    "401": _error("No bearer token with read scope, or not a valid one."),
    "503": _error("ClickHouse did not answer; try again after Retry-After."),
}


def _parameter(name: str, settings: QuerySettings) -> dict[str, Any]:
    param = PARAMS[name]
    schema = dict(param.schema)
    if name in ("limit", "n"):
        schema["maximum"] = settings.max_rows
    spec: dict[str, Any] = {"name": name, "in": "query", "required": False, "description": param.description}
    if param.repeated:
        items = {"type": "array", "items": schema, "maxItems": MAX_VALUES_PER_FILTER}
        spec.update(schema=items, style="form", explode=True)
    else:
        spec["schema"] = schema
    return spec


def _operation(endpoint: str, settings: QuerySettings) -> dict[str, Any]:
    summary, description = SUMMARIES[endpoint]
    return {
        "get": {
            "operationId": endpoint,
            "summary": summary,
            "description": f"{description} A range spans at most {settings.max_days} days.",
            "parameters": [_parameter(name, settings) for name in ENDPOINT_PARAMS[endpoint]],
            "responses": {
                "200": {
                    "description": "The counts (`format=csv`: the same rows as CSV, with a header row).",
                    "headers": {"X-Tally-Fresh-As-Of": FRESH_HEADER},
                    "content": {
                        "application/json": {"schema": {"$ref": "#/components/schemas/Counts"}},
                        "text/csv": {"schema": {"type": "string"}},
                    },
                },
                **ERRORS,
            },
        }
    }


def _get_stats() -> dict[str, Any]:
    return {
        "get": {
            "operationId": "get_stats",
            "summary": "The seed's heat-map call",
            "description": "A day's counts of these dom ids as `[[dom_id, counter, label], ...]`, summed over "
            "categories. Public when the server sets TALLY_API_PUBLIC_GET_STATS.",
            "parameters": [
                {
                    "name": "dom_ids",
                    "in": "query",
                    "required": True,
                    "description": f"Dom ids separated by `|` (trailing `|` allowed), {MAX_DOM_IDS_PER_QUERY} at most.",
                    "schema": {"type": "string", "minLength": 1},
                },
                {
                    "name": "day",
                    "in": "query",
                    "required": False,
                    "description": "YYYY-MM-DD; default: today.",
                    "schema": {"type": "string", "format": "date"},
                },
            ],
            "responses": {
                "200": {
                    "description": "One `[dom_id, counter, label]` per dom id and label.",
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "array",
                                "items": {"type": "array", "minItems": 3, "maxItems": 3},
                            }
                        }
                    },
                },
                **ERRORS,
            },
        }
    }


KEY_SCHEMA = {
    "type": "string",
    "minLength": 1,
    "maxLength": MAX_IDEMPOTENCY_KEY_LEN,
    "pattern": f"^{IDEMPOTENCY_KEY_RULE.pattern}$",
}
KEY_DESCRIPTION = (
    "Names the request: every send of one request with the same key counts once within the dedupe window "
    "(docs/sending.md). 1-{n} of A-Z a-z 0-9 _ -; a malformed key is a 400 naming the field. "
)
KEY_PARAMETERS = [
    {
        "name": "Idempotency-Key",
        "in": "header",
        "required": False,
        "description": KEY_DESCRIPTION.format(n=MAX_IDEMPOTENCY_KEY_LEN) + "Given once.",
        "schema": KEY_SCHEMA,
    },
    {
        "name": "idempotency_key",
        "in": "query",
        "required": False,
        "description": KEY_DESCRIPTION.format(n=MAX_IDEMPOTENCY_KEY_LEN)
        + "Where no header can be set (sendBeacon, the pixel, a link); given once, and equal to the header if both.",
        "schema": KEY_SCHEMA,
    },
]
LABELS_PARAMETER = {
    "name": "labels",
    "in": "query",
    "required": True,
    "description": "Labels separated by `|`, each `label`, `label:category` or `label:category:dom_id`; given once.",
    "schema": {"type": "string", "minLength": 1},
}
ACCEPTED = {
    "description": "Every event counted is in Kafka (`accepted`); what was dropped or restamped, and why.",
    "content": {
        "application/json": {
            "schema": {
                "type": "object",
                "required": ["accepted"],
                "properties": {
                    "accepted": {"type": "integer", "minimum": 0},
                    "dropped": {"type": "array", "items": {"type": "object"}},
                    "restamped": {"type": "integer", "minimum": 1},
                },
            }
        }
    },
}
TRACK_ERRORS = {
    "400": _error("A parameter, header or the body broke a rule; `field` and `rule` say which and how."),
    "413": _error("The query string or the body is too large."),
    "503": _error("Kafka did not take the events; `recorded` (none or unknown) says what may be in it."),
}
PIXEL = {
    "description": "A 1x1 GIF, whatever the status (errors: the JSON in X-Tally-Error).",
    "content": {"image/gif": {"schema": {"type": "string", "format": "binary"}}},
}


def _track() -> dict[str, Any]:
    return {
        "/track/": {
            "get": {
                "operationId": "track",
                "summary": "Count labels (the seed's call)",
                "security": [],
                "parameters": [LABELS_PARAMETER, *KEY_PARAMETERS],
                "responses": {"202": ACCEPTED, **TRACK_ERRORS},
            },
            "post": {
                "operationId": "track_post",
                "summary": "Count a JSON batch, or a sendBeacon body",
                "security": [],
                "parameters": KEY_PARAMETERS,
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {"schema": {"oneOf": [{"type": "object"}, {"type": "array"}]}},
                        "text/plain": {"schema": {"type": "string", "minLength": 1}},
                    },
                },
                "responses": {
                    "202": ACCEPTED,
                    **TRACK_ERRORS,
                    "415": _error("A content type other than JSON or text/plain."),
                },
            },
        },
        "/track.gif": {
            "get": {
                "operationId": "track_pixel",
                "summary": "Count labels from an <img>",
                "security": [],
                "parameters": [LABELS_PARAMETER, *KEY_PARAMETERS],
                "responses": {"200": PIXEL, "400": PIXEL, "413": PIXEL, "503": PIXEL},
            }
        },
    }


def document(settings: QuerySettings, beacons: bool = False) -> dict[str, Any]:
    """The document of the routes one process serves: the read API, and the beacon routes if ``beacons``."""
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "Tally read API",
            "version": "1",
            "description": "Counts of labels per day and hour, read from ClickHouse's always-correct views. "
            "Every answer says how fresh it is: `fresh_as_of` and the X-Tally-Fresh-As-Of header.",
        },
        "paths": {
            **{f"/api/v1/{endpoint}": _operation(endpoint, settings) for endpoint in ENDPOINT_PARAMS},
            "/get_stats/": _get_stats(),
            **(_track() if beacons else {}),
        },
        "components": {
            "schemas": {"Counts": COUNTS, "Row": ROW, "Error": ERROR},
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "description": "Read scope."}},
        },
        "security": [{"bearer": []}],
    }
