"""Structured logs: one line per event, JSON, no secrets.

    log = get_logger("peer", node="v1")
    log.info("peer.connected", peer="v2", rtt_ms=0.4)

writes ``{"ts": ..., "level": "info", "component": "peer", "node": "v1",
"event": "peer.connected", "peer": "v2", "rtt_ms": 0.4}`` to stderr.  Fields
must never carry key material or PINs; callers pass names and fingerprints.
"""

from __future__ import annotations

import json
import logging
import sys
from typing import Any

_ROOT = "trustchain"


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        fields: dict[str, Any] = {
            "ts": round(record.created, 6),
            "level": record.levelname.lower(),
        }
        fields.update(getattr(record, "fields", {}))
        fields.setdefault("event", record.getMessage())
        return json.dumps(fields, default=str, separators=(",", ":"))


def configure(level: str = "info", stream: Any = None) -> None:
    """Send TrustChain's events to `stream` (stderr by default) as JSON lines."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(_JsonFormatter())
    root = logging.getLogger(_ROOT)
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False


class EventLogger:
    """Logs named events with key/value fields bound at creation."""

    def __init__(self, component: str, **bound: Any) -> None:
        self._logger = logging.getLogger(f"{_ROOT}.{component}")
        self._bound = {"component": component, **bound}

    def bind(self, **more: Any) -> EventLogger:
        child = EventLogger.__new__(EventLogger)
        child._logger = self._logger
        child._bound = {**self._bound, **more}
        return child

    def _emit(self, level: int, event: str, fields: dict[str, Any]) -> None:
        if self._logger.isEnabledFor(level):
            self._logger.log(
                level, event, extra={"fields": {**self._bound, "event": event, **fields}}
            )

    def debug(self, event: str, **fields: Any) -> None:
        self._emit(logging.DEBUG, event, fields)

    def info(self, event: str, **fields: Any) -> None:
        self._emit(logging.INFO, event, fields)

    def warning(self, event: str, **fields: Any) -> None:
        self._emit(logging.WARNING, event, fields)

    def error(self, event: str, **fields: Any) -> None:
        self._emit(logging.ERROR, event, fields)


def get_logger(component: str, **bound: Any) -> EventLogger:
    return EventLogger(component, **bound)
