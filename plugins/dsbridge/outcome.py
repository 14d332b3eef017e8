"""How a task tells the notify step why a request did not succeed.

Airflow does not hand one task's exception to another, so a failing step records the reason in an
XCom (`dsbridge_error`) before it raises; `notify_failure` reads it back to build the event.
"""

from __future__ import annotations

from collections.abc import Generator
from contextlib import contextmanager
from typing import Any, NoReturn

from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

from dsbridge.callback.event import CANCELLED, FAILED, trace_excerpt
from dsbridge.retry import Transient, is_transient

ERROR_XCOM_KEY = "dsbridge_error"
TRACKED_TASKS = ("submit", "wait", "collect")


def failure_record(
    task_id: str | None,
    message: str,
    *,
    code: str,
    cancelled: bool = False,
    trace: str | None = None,
    databricks_state: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Why the request failed, as the `dsbridge_error` XCom keeps it for the failure event."""
    return {
        "type": CANCELLED if cancelled else FAILED,
        "code": code,
        "message": message,
        "trace": trace_excerpt(trace),
        "failed_task": task_id,
        "databricks_state": databricks_state,
    }


def record_failure(
    context: Any,
    message: str,
    *,
    code: str,
    cancelled: bool = False,
    trace: str | None = None,
    databricks_state: dict[str, Any] | None = None,
) -> None:
    """Keep why the request failed (the `dsbridge_error` XCom) for the failure event."""
    ti = context["ti"]
    record = failure_record(
        ti.task_id, message, code=code, cancelled=cancelled, trace=trace, databricks_state=databricks_state
    )
    ti.xcom_push(key=ERROR_XCOM_KEY, value=record)


def fail_request(
    context: Any,
    message: str,
    *,
    code: str,
    cancelled: bool = False,
    trace: str | None = None,
    databricks_state: dict[str, Any] | None = None,
    transient: bool = False,
) -> NoReturn:
    """Record why the request failed, then raise: `Transient` is retried within its horizon (see
    `dsbridge.retry`); anything else fails the task at once."""
    record_failure(context, message, code=code, cancelled=cancelled, trace=trace, databricks_state=databricks_state)
    if transient:
        raise Transient(message)
    raise AirflowFailException(message)


@contextmanager
def failing_request_on_error(context: Any, what: str, *, code: str) -> Generator[None]:
    """Around a call to a dependency (Databricks, S3): any error fails the request with `what` and
    the error, and is retried within its horizon when it is transient. Decisions already taken
    inside (a failure, a skip, a transient failure) pass through unchanged."""
    try:
        yield
    except (AirflowFailException, AirflowSkipException, Transient):
        raise
    except Exception as exc:
        fail_request(context, f"{what}: {exc}", code=code, transient=is_transient(exc))
