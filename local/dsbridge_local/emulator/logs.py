"""Structured log lines (one JSON object per line on stderr) carrying run ids and request ids.

Ops follow one request through Airflow, the emulator and the callback by its `request_id`, which
dsbridge passes as a base parameter; every emulator event that concerns a run names it.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

LOGGER = logging.getLogger("dsbridge_local.emulator")


def configure(level: str = "INFO") -> None:
    """Send the emulator's events to stderr as JSON lines (idempotent)."""
    if not any(getattr(h, "_dsbridge", False) for h in LOGGER.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        handler._dsbridge = True  # type: ignore[attr-defined]
        LOGGER.addHandler(handler)
    LOGGER.setLevel(level.upper())
    LOGGER.propagate = False


def log_event(event: str, level: int = logging.INFO, **fields: Any) -> None:
    if not LOGGER.isEnabledFor(level):
        return
    record = {"ts": round(time.time(), 3), "logger": "dsbridge_local.emulator", "event": event}
    record.update({key: value for key, value in fields.items() if value is not None})
    LOGGER.log(level, json.dumps(record, default=str))
