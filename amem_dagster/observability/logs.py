"""JSON-line logs on the `amem` logger: identifiers and counts only, never memory text or metadata values.

Callers pass fields with `fields(...)`; the formatter writes only the names in ALLOWED, so a field that might
carry personal text cannot slip into a line. Lines go to stderr, which Dagster captures per step (the run's
stderr in Dagit, the pod log on Kubernetes) and which is the terminal of the sensor's code server.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
from datetime import UTC, datetime
from typing import Any

LOGGER_NAME = "amem"
LEVEL_VARIABLE = "AMEM_LOG_LEVEL"
ALLOWED = frozenset({
    "tenant_id", "agent_name", "event_type", "run_id", "trace_id", "event_id", "region", "job", "step",
    "sensor", "reason", "count", "events", "tenants", "runs", "new", "erased", "rejected", "pending", "store",
    "partition", "offset", "topic", "seconds", "traced_events", "error", "model", "by_reason",
})
_configured = False
_lock = threading.Lock()


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, msg, then the allowed fields of the record's `amem` extra."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for name, value in (getattr(record, "amem", None) or {}).items():
            if name not in ALLOWED or value is None:
                continue
            if isinstance(value, dict):  # counts by a short code, e.g. dead letters by reason
                line[name] = {str(k): v for k, v in value.items() if isinstance(v, int)}
            else:
                line[name] = value if isinstance(value, bool | int | float) else str(value)
        if record.exc_info and record.exc_info[0] is not None:
            # The class only: messages of database errors can quote the failing row.
            line["error"] = record.exc_info[0].__name__
        # ensure_ascii: control characters and line separators are escaped, so a record is always one line.
        return json.dumps(line, ensure_ascii=True, separators=(",", ":"))


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever sys.stderr is at emit time, so Dagster's per-step capture sees the lines."""

    def __init__(self) -> None:
        super().__init__()

    @property
    def stream(self):  # type: ignore[override]
        return sys.stderr

    @stream.setter
    def stream(self, _value) -> None:
        pass


def configure(environ: dict[str, str] | None = None) -> logging.Logger:
    """Attach the JSON handler to the `amem` logger once per process; level from AMEM_LOG_LEVEL (INFO)."""
    global _configured
    logger = logging.getLogger(LOGGER_NAME)
    with _lock:
        if not _configured:
            env = os.environ if environ is None else environ
            level = (env.get(LEVEL_VARIABLE) or "INFO").upper()
            handler = _StderrHandler()
            handler.setFormatter(JsonFormatter())
            logger.addHandler(handler)
            logger.setLevel(level if level in logging.getLevelNamesMapping() else "INFO")
            # The root logger's handlers would print the same record again, without the fields.
            logger.propagate = False
            _configured = True
    return logger


def get(name: str) -> logging.Logger:
    """A child of the `amem` logger, e.g. get("sensor") is `amem.sensor`."""
    return logging.getLogger(f"{LOGGER_NAME}.{name}")


def fields(**values: Any) -> dict[str, Any]:
    """The `extra` argument that carries structured fields: logger.info("stored", extra=fields(tenant_id=t))."""
    return {"amem": values}
