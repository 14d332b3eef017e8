"""Callback events built and signed the way dsbridge sends them, for receiver and service tests."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from dsbridge.callback.event import FAILED, SUCCEEDED, ErrorCode, EventType, build_event, encode
from dsbridge.callback.signing import new_secret, sign_headers

SECRET = new_secret()
JOB = "merchant_threshold"
REQUEST = "req-42"


def event(
    event_type: EventType = SUCCEEDED, *, request_id: str = REQUEST, attempt: int = 0, **kw: Any
) -> dict[str, Any]:
    """A schema-valid event; a failure gets an error unless one is given."""
    if event_type != SUCCEEDED and "error" not in kw:
        kw["error"] = {
            "code": ErrorCode.NOTEBOOK_FAILED,
            "message": "boom",
            "trace": "Traceback…",
            "failed_task": "wait",
        }
    if event_type == SUCCEEDED:
        kw.setdefault("result", {"threshold": 0.42})
        kw.setdefault("result_inline", True)
        kw.setdefault("result_location", f"s3://dsbridge-results/runs/{JOB}/{request_id}/curve.json")
    return build_event(event_type=event_type, job=kw.pop("job", JOB), request_id=request_id, attempt=attempt, **kw)


def refusal(conflicting_run_id: str = "req-42-again", *, request_id: str = REQUEST) -> dict[str, Any]:
    """The sequence-0 event that refuses a second DAG run reusing `request_id` with other parameters."""
    return event(
        FAILED,
        request_id=request_id,
        conflicting_run_id=conflicting_run_id,
        error={"code": ErrorCode.REQUEST_ID_CONFLICT, "message": "request id taken by other parameters"},
    )


def signed(
    payload: dict[str, Any] | bytes,
    *,
    secret: str | list[str] = SECRET,
    webhook_id: str | None = None,
    timestamp: datetime | None = None,
) -> tuple[bytes, dict[str, str]]:
    """The body and the Standard Webhooks headers, as notify_* sends them."""
    body = payload if isinstance(payload, bytes) else encode(payload)
    event_id = webhook_id or (payload["event_id"] if isinstance(payload, dict) else "evt_" + "0" * 32)
    return body, sign_headers(secret, event_id, body, timestamp=timestamp) | {"content-type": "application/json"}
