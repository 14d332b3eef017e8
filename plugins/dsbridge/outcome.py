"""How a task tells the notify step why a request did not succeed.

Airflow does not hand one task's exception to another, so a failing step records the reason in an
XCom (`dsbridge_error`) before it raises; `notify_failure` reads it back to build the event.
"""

from __future__ import annotations

from typing import Any

from airflow.sdk.exceptions import AirflowFailException

from dsbridge.callback.event import CANCELLED, FAILED, trace_excerpt

ERROR_XCOM_KEY = "dsbridge_error"
TRACKED_TASKS = ("submit", "wait", "collect")


def record_failure(
    context: Any,
    message: str,
    *,
    cancelled: bool = False,
    trace: str | None = None,
    databricks_state: dict[str, Any] | None = None,
) -> None:
    """Keep why the request failed (the `dsbridge_error` XCom) for the failure event."""
    ti = context["ti"]
    ti.xcom_push(
        key=ERROR_XCOM_KEY,
        value={
            "type": CANCELLED if cancelled else FAILED,
            "message": message,
            "trace": trace_excerpt(trace),
            "failed_task": ti.task_id,
            "databricks_state": databricks_state,
        },
    )


def fail_request(
    context: Any,
    message: str,
    *,
    cancelled: bool = False,
    trace: str | None = None,
    databricks_state: dict[str, Any] | None = None,
    retryable: bool = False,
) -> None:
    """Record why the request failed, then raise (without retries unless `retryable`)."""
    record_failure(context, message, cancelled=cancelled, trace=trace, databricks_state=databricks_state)
    if retryable:
        raise RuntimeError(message)
    raise AirflowFailException(message)
