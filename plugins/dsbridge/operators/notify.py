"""Deliver a request's one final event to the optimization service.

An `HttpOperator` to the optimization-service connection: the target comes only from that
connection and the contract's callback path, never from the request. The event is built once and
kept in the task's state store, so every retry sends the same bytes under the same event id, with a
fresh Standard Webhooks signature.

`CallbackOperator` reports the outcome of its own DAG run (the job DAG's `notify_success` and
`notify_failure`); `OutcomeCallbackOperator` reports a job run that ended without reaching them
(cancelled by the caller, or timed out), from the `dsbridge_outcomes` DAG.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal
from urllib.parse import quote

from airflow.providers.databricks.hooks.databricks import DatabricksHook
from airflow.providers.http.operators.http import HttpOperator
from airflow.sdk import BaseHook
from airflow.sdk.exceptions import AirflowFailException

from dsbridge.callback.event import CANCELLED, FAILED, SUCCEEDED, build_event, encode
from dsbridge.callback.signing import sign_headers
from dsbridge.contract import load_contract
from dsbridge.contract.params import safe_request_id
from dsbridge.outcome import ERROR_XCOM_KEY, TRACKED_TASKS
from dsbridge.settings import DATABRICKS_CONN_ID, SERVICE_CONN_ID, load_settings, notebooks_dir

EVENT_STATE_KEY = "dsbridge_event"
HTTP_TIMEOUT_SECONDS = 30
TIMED_OUT = "timed_out"
# Worth another delivery later: the receiver is busy, down or slow (connection errors raise too).
RETRYABLE_STATUSES = frozenset({408, 429})
BODY_EXCERPT_CHARS = 300


class DeliveryRetryable(RuntimeError):
    """The receiver could not take the event now; Airflow retries the task with backoff."""


def check_delivery(response: Any) -> bool:
    """Accept 2xx; retry 408, 429 and 5xx; fail fast (with an alert) on any other answer.

    Redirects are not followed, so an unexpected 3xx also fails fast: the target is exactly the
    connection's host and the contract's path.
    """
    status = int(response.status_code)
    if 200 <= status < 300:
        return True
    excerpt = (response.text or "")[:BODY_EXCERPT_CHARS]
    if status in RETRYABLE_STATUSES or status >= 500:
        raise DeliveryRetryable(f"the optimization service answered {status}; retrying later: {excerpt}")
    raise AirflowFailException(
        f"the optimization service refused the event with {status} ({excerpt}); fix the receiver or the "
        "connection, then clear this task to resend the same event"
    )


def _iso_from_ms(ms: int | None) -> str | None:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat() if ms else None


def timings_of(run: dict[str, Any] | None, requested_at: datetime | None) -> dict[str, Any]:
    """Request and notebook times. Multi-task runs report durations per task, so use start/end."""
    run = run or {}
    start, end = run.get("start_time"), run.get("end_time")
    queue_ms = run.get("queue_duration")
    return {
        "requested_at": requested_at.isoformat() if requested_at else None,
        "notebook_started_at": _iso_from_ms(start),
        "notebook_ended_at": _iso_from_ms(end),
        "notebook_seconds": (end - start) / 1000 if start and end else None,
        "queue_seconds": queue_ms / 1000 if queue_ms is not None else None,
    }


def signing_secrets(conn_id: str) -> list[str]:
    """The connection's `signing_secrets` (list or comma-separated) or `signing_secret` extra."""
    extra = BaseHook.get_connection(conn_id).extra_dejson
    secrets = extra.get("signing_secrets") or extra.get("signing_secret") or []
    if isinstance(secrets, str):
        secrets = [s.strip() for s in secrets.split(",") if s.strip()]
    if not secrets:
        raise ValueError(
            f"connection {conn_id!r} has no signing secret: set extra "
            '{"signing_secret": "whsec_..."} (or "signing_secrets": [new, old] while rotating)'
        )
    return list(secrets)


@dataclass(frozen=True)
class RequestRecord:
    """What the event needs to know about one request's DAG run, and how to read its XComs."""

    job: str
    run_id: str
    request_id: str
    attempt: int
    requested_at: datetime | None
    pull: Callable[[str, str], Any]

    def common_event_fields(self) -> dict[str, Any]:
        run = self.pull("wait", "return_value")
        run_page_url = (run or {}).get("run_page_url") or self.pull("submit", "run_page_url")
        databricks_run_id = (run or {}).get("run_id") or self.pull("submit", "run_id")
        base_url = load_settings().airflow_base_url
        return {
            "job": self.job,
            "request_id": self.request_id,
            "attempt": self.attempt,
            "airflow_run_url": f"{base_url}/dags/{quote(self.job)}/runs/{quote(self.run_id, safe='')}",
            "databricks_run_url": run_page_url,
            "databricks_run_id": int(databricks_run_id) if databricks_run_id else None,
            "timings": timings_of(run, self.requested_at),
        }

    def recorded_failure(self) -> dict[str, Any] | None:
        """The reason recorded by the first step that recorded one (see dsbridge.outcome)."""
        for task_id in TRACKED_TASKS:
            if recorded := self.pull(task_id, ERROR_XCOM_KEY):
                return dict(recorded)
        return None


class CallbackOperator(HttpOperator):
    """POST the signed event of this DAG run's request: success, or failure/cancellation."""

    def __init__(
        self,
        *,
        outcome: Literal["success", "failure"],
        endpoint: str,
        http_conn_id: str = SERVICE_CONN_ID,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            http_conn_id=http_conn_id,
            endpoint=endpoint,
            method="POST",
            extra_options={"timeout": HTTP_TIMEOUT_SECONDS, "check_response": False, "allow_redirects": False},
            response_check=check_delivery,
            deferrable=False,
            **kwargs,
        )
        self.outcome = outcome

    def execute(self, context: Any) -> Any:
        event = self._event_once(context)
        body = encode(event)
        self.data = body  # type: ignore[assignment]
        self.headers = {
            "Content-Type": "application/json",
            **sign_headers(signing_secrets(self.http_conn_id), event["event_id"], body),
        }
        self.log.info("Delivering %s %s for request_id=%s", event["type"], event["event_id"], event["request_id"])
        return super().execute(context)

    def _event_once(self, context: Any) -> dict[str, Any]:
        store = context.get("task_state_store")
        if store is not None and (kept := store.get(EVENT_STATE_KEY)):
            return dict(json.loads(kept))
        event = self.event(self.record(context), context)
        if store is not None:
            store.set(EVENT_STATE_KEY, json.dumps(event))
        return event

    def record(self, context: Any) -> RequestRecord:
        """This DAG run's request."""
        ti = context["ti"]
        dag_run = context["dag_run"]
        request = ti.xcom_pull(task_ids="submit", key="request") or {}
        return RequestRecord(
            job=dag_run.dag_id,
            run_id=dag_run.run_id,
            request_id=request.get("request_id")
            or safe_request_id(dag_run.run_id, context["params"].get("request_id")),
            attempt=int(getattr(dag_run, "clear_number", 0) or 0),
            requested_at=getattr(dag_run, "start_date", None),
            pull=lambda task_id, key: ti.xcom_pull(task_ids=task_id, key=key),
        )

    def event(self, record: RequestRecord, context: Any) -> dict[str, Any]:
        common = record.common_event_fields()
        if self.outcome == "success":
            collected = record.pull("collect", "return_value") or {}
            return build_event(
                event_type=SUCCEEDED,
                result=collected.get("result"),
                result_inline=bool(collected.get("result_inline")),
                result_location=collected.get("result_location"),
                **common,
            )
        failure = record.recorded_failure() or {
            "type": FAILED,
            "message": "a step failed without a recorded reason; see the Airflow run",
        }
        event_type = CANCELLED if failure.pop("type", FAILED) == CANCELLED else FAILED
        return build_event(event_type=event_type, error=failure, **common)


class OutcomeCallbackOperator(CallbackOperator):
    """Report a job run that ended before its own notify tasks could: cancelled or timed out.

    Its DAG run's conf names the job run (`job`, `run_id`, `request_id`, `attempt`, `reason`);
    the callback path comes from that job's contract.
    """

    template_fields: Sequence[str] = (*CallbackOperator.template_fields, "databricks_conn_id")

    def __init__(self, *, databricks_conn_id: str = DATABRICKS_CONN_ID, **kwargs: Any) -> None:
        super().__init__(outcome="failure", endpoint="", **kwargs)
        self.databricks_conn_id = databricks_conn_id

    def execute(self, context: Any) -> Any:
        params = context["params"]
        job, run_id = params["job"], params["run_id"]
        # Only a job run that really ended failed gets this event (and its notebook cancelled):
        # a hand-made run of this DAG cannot cancel or speak for a request that is still alive.
        found = context["ti"].get_dagrun_state(dag_id=job, run_id=run_id)
        state = str(getattr(found, "value", found))  # a DagRunState enum, or its value
        if state != "failed":
            raise AirflowFailException(f"job run {job} {run_id} is {state!r}, not failed; nothing to report")
        self.endpoint = load_contract(notebooks_dir() / job / "job.yaml").failure_path
        self.cancel_databricks_run(self.record(context))
        return super().execute(context)

    def cancel_databricks_run(self, record: RequestRecord) -> None:
        """Stop the notebook first. The waiting trigger cancels it too when it is killed, but a
        run stopped before its trigger started (or while submitting) is only cancelled here;
        cancelling a finished run changes nothing."""
        run_id = record.pull("submit", "run_id")
        if run_id:
            DatabricksHook(self.databricks_conn_id, caller=type(self).__name__).cancel_run(int(run_id))
            self.log.info("Cancelled Databricks run %s of %s %s", run_id, record.job, record.run_id)

    def record(self, context: Any) -> RequestRecord:
        params = context["params"]
        ti = context["ti"]
        job, run_id = params["job"], params["run_id"]
        started = params.get("requested_at")
        return RequestRecord(
            job=job,
            run_id=run_id,
            request_id=params["request_id"],
            attempt=int(params.get("attempt") or 0),
            requested_at=datetime.fromisoformat(started) if started else None,
            pull=lambda task_id, key: ti.xcom_pull(dag_id=job, run_id=run_id, task_ids=task_id, key=key),
        )

    def event(self, record: RequestRecord, context: Any) -> dict[str, Any]:
        reason = context["params"].get("reason")
        if reason == TIMED_OUT:
            error = {
                "message": "the request exceeded its time limit and was stopped (DAG run timeout)",
                "failed_task": None,
            }
            return build_event(event_type=FAILED, error=error, **record.common_event_fields())
        error = {"message": "the request was cancelled by the caller", "failed_task": None}
        return build_event(event_type=CANCELLED, error=error, **record.common_event_fields())
