"""The callback event: the signed message that tells the optimization service how a request ended.

The shape is versioned (`schema_version`) and documented in docs/contract.md and
`event.schema.json`. One request tells one story:

- each *attempt* (the first run, then each clear of the DAG run by ops) ends in exactly one final
  event; `sequence` grows with the attempt, and an event of a later attempt names the one it
  `supersedes`, so a receiver keeps the event with the highest `sequence` per request;
- the event id is derived, not random: it is the same on every delivery retry of that event and
  unique per (job, request, attempt, type), so a receiver deduplicates on it;
- a second DAG run that reuses a request id with other parameters is refused with an event of its
  own (`sequence` 0, error code `request_id_conflict`) that is not part of the request's story.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from typing import Any, Literal

SCHEMA_VERSION = "2"
EventType = Literal["request.succeeded", "request.failed", "request.cancelled"]
SUCCEEDED: EventType = "request.succeeded"
FAILED: EventType = "request.failed"
CANCELLED: EventType = "request.cancelled"
TRACE_EXCERPT_CHARS = 4000
# The `sequence` of an event that refuses a conflicting request: below every event of the story.
CONFLICT_SEQUENCE = 0


class ErrorCode:
    """Stable machine-readable reasons (`error.code`); the message says the same for people."""

    INVALID_REQUEST = "invalid_request"  # unknown parameters, bad request id, parameters too large
    REQUEST_ID_CONFLICT = "request_id_conflict"  # the request id is taken by other parameters
    SUBMIT_FAILED = "submit_failed"  # Databricks refused or never accepted the run
    DATABRICKS_UNREACHABLE = "databricks_unreachable"  # the API stayed unreachable past its horizon
    NOTEBOOK_FAILED = "notebook_failed"  # the notebook raised (or the run failed in Databricks)
    NOTEBOOK_TIMED_OUT = "notebook_timed_out"  # the run exceeded the contract's timeout
    RUN_CANCELLED = "run_cancelled"  # the Databricks run was cancelled (e.g. in the Databricks UI)
    OUTPUT_INVALID = "output_invalid"  # the output broke the job's output contract
    OUTPUT_UNREADABLE = "output_unreadable"  # the output could not be read within its horizon
    CANCELLED = "cancelled"  # the caller cancelled (marked the DAG run failed)
    TIMED_OUT = "timed_out"  # the DAG run exceeded its time limit
    STOPPED_WITHOUT_RESULT = "stopped_without_result"  # marked success by hand before a result existed
    INTERNAL_ERROR = "internal_error"  # a step failed without saying why; see the Airflow run

    ALL = (
        INVALID_REQUEST,
        REQUEST_ID_CONFLICT,
        SUBMIT_FAILED,
        DATABRICKS_UNREACHABLE,
        NOTEBOOK_FAILED,
        NOTEBOOK_TIMED_OUT,
        RUN_CANCELLED,
        OUTPUT_INVALID,
        OUTPUT_UNREADABLE,
        CANCELLED,
        TIMED_OUT,
        STOPPED_WITHOUT_RESULT,
        INTERNAL_ERROR,
    )


def _digest(*parts: object) -> str:
    return hashlib.sha256("\n".join(str(p) for p in parts).encode()).hexdigest()[:32]


def event_id_for(job: str, request_id: str, attempt: int, event_type: EventType) -> str:
    """The id of a request's final event: one per (job, request, attempt, outcome)."""
    return f"evt_{_digest(job, request_id, attempt, event_type)}"


def conflict_event_id_for(job: str, request_id: str, dag_run_id: str, attempt: int) -> str:
    """The id of the event that refuses DAG run `dag_run_id` for reusing `request_id`."""
    return f"evt_{_digest(job, request_id, 'conflict', dag_run_id, attempt)}"


def sequence_for(attempt: int) -> int:
    """Events of later attempts come later: the first attempt's event is 1."""
    return attempt + 1


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
    supersedes: str | None = None,
    conflicting_run_id: str | None = None,
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
    """Assemble an event that matches `event.schema.json`.

    `conflicting_run_id` marks the refusal of a DAG run that reused `request_id` with other
    parameters: it gets an id of its own and sequence 0, and supersedes nothing.
    """
    if conflicting_run_id is not None:
        event_id = conflict_event_id_for(job, request_id, conflicting_run_id, attempt)
        sequence, supersedes = CONFLICT_SEQUENCE, None
    else:
        event_id = event_id_for(job, request_id, attempt, event_type)
        sequence = sequence_for(attempt)
    if error is not None and error.get("code") not in ErrorCode.ALL:
        error = {**error, "code": ErrorCode.INTERNAL_ERROR}
    return {
        "schema_version": SCHEMA_VERSION,
        "event_id": event_id,
        "type": event_type,
        "job": job,
        "request_id": request_id,
        "attempt": attempt,
        "sequence": sequence,
        "supersedes": supersedes,
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
