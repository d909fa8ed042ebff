"""Structured events for ct/, in the record shape node/log.py formats as JSON lines.

ct/ must not import trustchain.node, so it logs through the standard library with
the fields node/log.py expects (``record.fields``); `trustchain ...` commands
install the JSON formatter.  Fields never carry key material.
"""

from __future__ import annotations

import logging
from typing import Any


class Events:
    def __init__(self, component: str) -> None:
        self._logger = logging.getLogger(f"trustchain.ct.{component}")
        self._component = f"ct.{component}"

    def _emit(self, level: int, event: str, fields: dict[str, Any]) -> None:
        if self._logger.isEnabledFor(level):
            self._logger.log(
                level,
                event,
                extra={"fields": {"component": self._component, "event": event, **fields}},
            )

    def info(self, event: str, **fields: Any) -> None:
        self._emit(logging.INFO, event, fields)

    def warning(self, event: str, **fields: Any) -> None:
        self._emit(logging.WARNING, event, fields)

    def error(self, event: str, **fields: Any) -> None:
        self._emit(logging.ERROR, event, fields)
