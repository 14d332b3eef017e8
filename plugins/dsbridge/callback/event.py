"""The callback event: the one message the optimization service receives per request.

The shape is versioned (`schema_version`) and documented in docs/contract.md and
`event.schema.json`. The event id is derived, not random, so every retry of the same outcome
carries the same id and the receiver can deduplicate.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from typing import Any, Literal

SCHEMA_VERSION = "1"
EventType = Literal["request.succeeded", "request.failed", "request.cancelled"]
SUCCEEDED: EventType = "request.succeeded"
FAILED: EventType = "request.failed"
CANCELLED: EventType = "request.cancelled"
TRACE_EXCERPT_CHARS = 4000


def event_id_for(job: str, request_id: str, attempt: int) -> str:
    """Stable id of a request's final event: one per (job, request, clear of the run)."""
    digest = hashlib.sha256(f"{job}\n{request_id}\n{attempt}".encode()).hexdigest()[:32]
    return f"evt_{digest}"


def trace_excerpt(trace: str | None, limit: int = TRACE_EXCERPT_CHARS) -> str | None:
    """The end of a trace, where the error is; long traces keep their last `limit` characters."""
    if not trace:
        return None
    return trace if len(trace) <= limit else "…" + trace[-limit:]


def build_event(
    *,
    event_type: EventType,
    job: str,
    request_id: str,
    attempt: int = 0,
    result: Any = None,
    result_location: str | None = None,
    result_inline: bool = False,
    error: dict[str, Any] | None = None,
    airflow_run_url: str | None = None,
    databricks_run_url: str | None = None,
    databricks_run_id: int | None = None,
    timings: dict[str, Any] | None = None,
    occurred_at: datetime | None = None,
) -> dict[str, Any]:
    """Assemble an event that matches `event.schema.json`."""
    return {
        "schema_version": SCHEMA_VERSION,
        "event_id": event_id_for(job, request_id, attempt),
        "type": event_type,
        "job": job,
        "request_id": request_id,
        "occurred_at": (occurred_at or datetime.now(UTC)).isoformat(),
        "result": result if result_inline else None,
        "result_inline": result_inline,
        "result_location": result_location,
        "error": error,
        "links": {"airflow_run": airflow_run_url, "databricks_run": databricks_run_url},
        "databricks_run_id": databricks_run_id,
        "timings": timings or {},
    }


def encode(event: dict[str, Any]) -> bytes:
    """The exact bytes that are signed and sent."""
    return json.dumps(event, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
