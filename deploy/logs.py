"""Structured logs for every Tally process: one JSON object per line, on stderr.

    {"level": "INFO", "logger": "uvicorn.error", "message": "Application startup complete.",
     "time": "2026-11-25T11:11:50.375492+00:00"}

Each line has ``level``, ``logger``, ``message`` and ``time`` (UTC, ISO 8601),
plus the ``extra`` fields of the call (``log.info("...", extra={"status": 503})``)
and ``exc_info`` with the traceback of an exception. python-json-logger
formats them. Configure once, at startup, before anything logs:

    configure("INFO")                            # a plain process
    uvicorn.run(..., log_config=dict_config())   # uvicorn applies it in each worker process

uvicorn's worker processes are spawned, not forked: they do not inherit a
configuration, so uvicorn is handed the dictionary and applies it in each.
kafka-python logs at WARNING and above only: its INFO lines are per
connection and would drown the service's own.
"""

from __future__ import annotations

import logging.config
from typing import Any, Final

LEVELS: Final = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
QUIET_LIBRARIES: Final = ("kafka", "aiokafka")


def dict_config(level: str = "INFO") -> dict[str, Any]:
    """A ``logging.config.dictConfig`` dictionary: JSON lines on stderr from the root logger down."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {
            "json": {
                "()": "pythonjsonlogger.json.JsonFormatter",
                "fmt": "%(levelname)s %(name)s %(message)s",
                "rename_fields": {"levelname": "level", "name": "logger"},
                "timestamp": "time",
            }
        },
        "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "json", "stream": "ext://sys.stderr"}},
        "root": {"level": level, "handlers": ["stderr"]},
        "loggers": {
            # uvicorn's own loggers come with handlers of their own: send them up to the root instead.
            **{name: {"handlers": [], "propagate": True} for name in ("uvicorn", "uvicorn.error", "uvicorn.access")},
            **{name: {"level": max(level, "WARNING", key=LEVELS.index)} for name in QUIET_LIBRARIES},
        },
    }


def configure(level: str = "INFO") -> None:
    """Log JSON lines from now on, in this process."""
    logging.config.dictConfig(dict_config(level))
