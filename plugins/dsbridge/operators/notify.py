"""Deliver the final event of one attempt at a request to the optimization service.

An `HttpOperator` to the optimization-service connection: the target comes only from that
connection and the contract's callback path, never from the request. The event of an attempt is
built once and kept in the task's state store under that attempt, so every retry sends the same
bytes under the same event id (with a fresh Standard Webhooks signature), and a later attempt never
re-sends an earlier one's. Each event is also recorded in the request's ledger in S3, which is how
a later attempt knows which event it supersedes and how the outcome DAG re-sends an event whose
delivery was cut short. A delivered event leaves a `delivered:<attempt>` mark in the task state
store; the outcome listener and the reconciler look for it.

`CallbackOperator` reports the outcome of its own DAG run (the job DAG's `notify_success` and
`notify_failure`); `OutcomeCallbackOperator` reports a job run that ended without delivering one
(cancelled by the caller, timed out, marked by hand), from the `dsbridge_outcomes` DAG.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cached_property
from typing import Any, Literal
from urllib.parse import quote

from airflow.providers.databricks.hooks.databricks import DatabricksHook
from airflow.providers.http.operators.http import HttpOperator
from airflow.sdk import BaseHook
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

from dsbridge.callback.event import (
    CANCELLED,
    FAILED,
    SUCCEEDED,
    ErrorCode,
    EventType,
    build_event,
    encode,
    sequence_for,
)
from dsbridge.callback.signing import sign_headers
from dsbridge.contract.params import safe_request_id
from dsbridge.final_events import MARKED_SUCCESS, TIMED_OUT, outcome_run_id
from dsbridge.ledger import Ownership, RequestLedger
from dsbridge.operators.submit import LIVE_STATES, active_runs_named, life_cycle
from dsbridge.outcome import ERROR_XCOM_KEY, TRACKED_TASKS
from dsbridge.request import Request, attempt_of, run_name
from dsbridge.retry import GAVE_UP_KEY, Transient
from dsbridge.s3 import DsbridgeS3Hook
from dsbridge.settings import AWS_CONN_ID, DATABRICKS_CONN_ID, SERVICE_CONN_ID, load_settings

EVENT_KEY = "event"
DELIVERED_KEY = "delivered"
HTTP_TIMEOUT_SECONDS = 30
# Worth another delivery later: the receiver is busy, down or slow (connection errors raise too).
RETRYABLE_STATUSES = frozenset({408, 429})
BODY_EXCERPT_CHARS = 300


class DeliveryRetryable(Transient):
    """The receiver could not take the event now; retried with backoff within the callback horizon."""


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
        "connection, then clear this task: that is a new attempt, whose event supersedes this one"
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


def state_key(name: str, attempt: int) -> str:
    """Task-state-store keys are per attempt: a clear never re-sends or hides an earlier attempt's."""
    return f"{name}:{attempt}"


@dataclass(frozen=True)
class RequestRecord:
    """What the event needs to know about one request's DAG run, and how to read its XComs."""

    job: str
    run_id: str
    request_id: str
    attempt: int
    output_path: str
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

    def collected(self) -> dict[str, Any] | None:
        return self.pull("collect", "return_value")


class CallbackOperator(HttpOperator):
    """POST the signed event of this DAG run's attempt: success, or failure/cancellation."""

    def __init__(
        self,
        *,
        outcome: Literal["success", "failure"],
        endpoint: str,
        http_conn_id: str = SERVICE_CONN_ID,
        aws_conn_id: str = AWS_CONN_ID,
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
        self.aws_conn_id = aws_conn_id

    @cached_property
    def s3_client(self) -> Any:
        return DsbridgeS3Hook(aws_conn_id=self.aws_conn_id, caller=type(self).__name__).get_conn()

    def execute(self, context: Any) -> Any:
        record = self.record(context)
        body, event = self._event_once(context, record)
        return self.deliver(context, record, body, event)

    def deliver(self, context: Any, record: RequestRecord, body: bytes, event: dict[str, Any]) -> dict[str, Any]:
        """POST `body` (already built and kept) with a fresh signature; mark it delivered."""
        self.data = body  # type: ignore[assignment]
        self.headers = {
            "Content-Type": "application/json",
            **sign_headers(signing_secrets(self.http_conn_id), event["event_id"], body),
        }
        self.log.info(
            "Delivering %s %s (sequence %s) for request_id=%s",
            event["type"],
            event["event_id"],
            event["sequence"],
            event["request_id"],
        )
        store = context.get("task_state_store")
        try:
            super().execute(context)
        except AirflowFailException as exc:
            if store is not None:
                store.set(state_key(GAVE_UP_KEY, record.attempt), f"refused: {exc}")
            raise
        if store is not None:
            store.set(state_key(DELIVERED_KEY, record.attempt), event["event_id"])
        return {"event_id": event["event_id"], "type": event["type"], "sequence": event["sequence"]}

    def _event_once(self, context: Any, record: RequestRecord) -> tuple[bytes, dict[str, Any]]:
        """This attempt's event: the one kept from an earlier try, or a new one (kept, then recorded)."""
        store = context.get("task_state_store")
        key = state_key(EVENT_KEY, record.attempt)
        kept = store.get(key) if store is not None else None
        if kept:
            event = dict(json.loads(str(kept)))
            body = encode(event)
        else:
            event = self.event(record, context)
            body = encode(event)
            if store is not None:
                store.set(key, body.decode())
        if event["sequence"] > 0:
            self._record_in_ledger(record, event, body)
        return body, event

    def record(self, context: Any) -> RequestRecord:
        """This DAG run's request."""
        ti = context["ti"]
        dag_run = context["dag_run"]
        request = ti.xcom_pull(task_ids="submit", key="request") or {}
        request_id = request.get("request_id") or safe_request_id(dag_run.run_id, context["params"].get("request_id"))
        return RequestRecord(
            job=dag_run.dag_id,
            run_id=dag_run.run_id,
            request_id=request_id,
            attempt=attempt_of(dag_run),
            output_path=request.get("output_path") or load_settings().output_path(dag_run.dag_id, request_id),
            requested_at=getattr(dag_run, "start_date", None),
            pull=lambda task_id, key: ti.xcom_pull(task_ids=task_id, key=key),
        )

    def event(self, record: RequestRecord, context: Any) -> dict[str, Any]:
        if self.outcome == "success":
            return self.success_event(record)
        failure = record.recorded_failure() or {
            "type": FAILED,
            "code": ErrorCode.INTERNAL_ERROR,
            "message": "a step failed without a recorded reason; see the Airflow run",
        }
        event_type = CANCELLED if failure.pop("type", FAILED) == CANCELLED else FAILED
        if failure.get("code") == ErrorCode.REQUEST_ID_CONFLICT:
            # Not part of the request's story: an id of its own, and nothing read from its ledger.
            return build_event(
                event_type=FAILED, error=failure, conflicting_run_id=record.run_id, **record.common_event_fields()
            )
        return self.story_event(record, event_type, error=failure)

    def success_event(self, record: RequestRecord) -> dict[str, Any]:
        collected = record.collected() or {}
        return self.story_event(
            record,
            SUCCEEDED,
            result=collected.get("result"),
            result_inline=bool(collected.get("result_inline")),
            result_location=collected.get("result_location"),
        )

    def story_event(self, record: RequestRecord, event_type: EventType, **fields: Any) -> dict[str, Any]:
        """An event of the request's own story: it names the earlier attempt's event it supersedes."""
        return build_event(
            event_type=event_type,
            supersedes=self._superseded(record),
            **fields,
            **record.common_event_fields(),
        )

    def _superseded(self, record: RequestRecord) -> str | None:
        if record.attempt == 0:
            return None
        try:
            return RequestLedger(self.s3_client, record.output_path).latest_before(sequence_for(record.attempt))
        except Exception:
            self.log.warning("Could not read the request's ledger; `supersedes` stays empty", exc_info=True)
            return None

    def _record_in_ledger(self, record: RequestRecord, event: dict[str, Any], body: bytes) -> None:
        """Best effort: the event matters more than its record, so S3 trouble never blocks it."""
        try:
            RequestLedger(self.s3_client, record.output_path).record_event(event, body)
        except Exception:
            self.log.warning("Could not record event %s in the request's ledger", event["event_id"], exc_info=True)


def fetch_dag_run(dag_id: str, run_id: str) -> Any:
    """Another DAG run as the Execution API knows it (state, conf, clear number, start date).

    The Task SDK's public surface offers only the state; the supervisor's `GetDagRun` message is
    what Airflow itself uses for asset events.
    """
    from airflow.sdk.execution_time.comms import GetDagRun
    from airflow.sdk.execution_time.task_runner import SUPERVISOR_COMMS

    return SUPERVISOR_COMMS.send(GetDagRun(dag_id=dag_id, run_id=run_id))


class OutcomeCallbackOperator(CallbackOperator):
    """Deliver the final event of a job run's attempt that ended without delivering one.

    Its DAG run's conf names the job run (`job`, `run_id`), the attempt that ended, why (`reason`)
    and the job's callback paths. Everything else is read from the job run itself, and nothing is
    done unless that run really ended in that attempt. The event is, in order of preference: the
    one the job's notify task already built for the attempt (re-sent byte for byte from the ledger);
    the success the run had collected when it was marked success by hand; a cancellation (or a
    timed-out failure) -- after which the notebook is cancelled.
    """

    template_fields: Sequence[str] = (*CallbackOperator.template_fields, "databricks_conn_id")

    def __init__(self, *, databricks_conn_id: str = DATABRICKS_CONN_ID, **kwargs: Any) -> None:
        super().__init__(outcome="failure", endpoint="", **kwargs)
        self.databricks_conn_id = databricks_conn_id

    @cached_property
    def databricks_hook(self) -> DatabricksHook:
        return DatabricksHook(self.databricks_conn_id, caller=type(self).__name__)

    def execute(self, context: Any) -> Any:
        params = context["params"]
        self.check_started_by_dsbridge(context)
        job_run = fetch_dag_run(params["job"], params["run_id"])
        state = str(getattr(job_run.state, "value", job_run.state))
        if state not in ("success", "failed"):
            raise AirflowSkipException(f"job run {params['run_id']} is {state}: it reports for itself")
        if attempt_of(job_run) != int(params["attempt"]):
            raise AirflowSkipException(f"job run {params['run_id']} has moved on to attempt {attempt_of(job_run)}")
        if (state == "success") != (params.get("reason") == MARKED_SUCCESS):
            reason = params.get("reason")
            raise AirflowFailException(f"job run {params['run_id']} is {state}; reason {reason!r} does not fit")
        record = self.job_record(context, job_run)
        request = Request(
            job=record.job,
            request_id=record.request_id,
            dag_run_id=record.run_id,
            attempt=record.attempt,
            conf=dict(job_run.conf or {}),
            output_path=record.output_path,
        )
        owner = self._ownership(request)
        if owner is Ownership.DUPLICATE:
            raise AirflowSkipException("a duplicate of another DAG run's request: that run reports it")
        body, event = self._outcome_event(context, record, conflict=owner is Ownership.CONFLICT)
        if event["type"] != SUCCEEDED:
            self.cancel_databricks_runs(record)
        self.endpoint = params["success_path"] if event["type"] == SUCCEEDED else params["failure_path"]
        return self.deliver(context, record, body, event)

    @staticmethod
    def check_started_by_dsbridge(context: Any) -> None:
        """Only the listener and the reconciler start these runs, under the run id they derive."""
        params, dag_run = context["params"], context["dag_run"]
        expected = outcome_run_id(params["job"], params["run_id"], int(params["attempt"]))
        run_type = str(getattr(getattr(dag_run, "run_type", None), "value", getattr(dag_run, "run_type", "")))
        if run_type != "operator_triggered" or dag_run.run_id != expected:
            raise AirflowFailException(
                f"{dag_run.dag_id} runs are started by dsbridge only (got a {run_type or 'unknown'} run "
                f"{dag_run.run_id!r}); nothing was sent"
            )

    def record(self, context: Any) -> RequestRecord:
        return self.job_record(context, fetch_dag_run(context["params"]["job"], context["params"]["run_id"]))

    @staticmethod
    def job_record(context: Any, job_run: Any) -> RequestRecord:
        """The job run's request, read from the job run itself (not from this run's conf)."""
        ti = context["ti"]
        job, run_id = job_run.dag_id, job_run.run_id
        request_id = safe_request_id(run_id, (job_run.conf or {}).get("request_id"))
        return RequestRecord(
            job=job,
            run_id=run_id,
            request_id=request_id,
            attempt=attempt_of(job_run),
            output_path=load_settings().output_path(job, request_id),
            requested_at=job_run.start_date,
            pull=lambda task_id, key: ti.xcom_pull(dag_id=job, run_id=run_id, task_ids=task_id, key=key),
        )

    def _ownership(self, request: Request) -> Ownership:
        """Whose request this is; a run stopped before its submit claims it now (first claim wins)."""
        return RequestLedger(self.s3_client, request.output_path).claim(request).ownership

    def _outcome_event(self, context: Any, record: RequestRecord, *, conflict: bool) -> tuple[bytes, dict[str, Any]]:
        store = context.get("task_state_store")
        key = state_key(EVENT_KEY, record.attempt)
        if store is not None and (kept := store.get(key)):
            body = str(kept).encode()
            return body, dict(json.loads(body))
        built = (
            None
            if conflict
            else RequestLedger(self.s3_client, record.output_path).event_at(sequence_for(record.attempt))
        )
        if built is not None:
            self.log.info("Re-sending the event the job run built for attempt %d", record.attempt)
            body = built
        else:
            event = self.outcome_event(record, context, conflict=conflict)
            body = encode(event)
            if not conflict:
                self._record_in_ledger(record, event, body)
        if store is not None:
            store.set(key, body.decode())
        return body, dict(json.loads(body))

    def outcome_event(self, record: RequestRecord, context: Any, *, conflict: bool) -> dict[str, Any]:
        reason = context["params"].get("reason")
        if reason == MARKED_SUCCESS and not conflict and record.collected():
            return self.success_event(record)
        if reason == TIMED_OUT:
            error = {
                "code": ErrorCode.TIMED_OUT,
                "message": "the request exceeded its time limit and was stopped (DAG run timeout)",
                "failed_task": None,
            }
            event_type: EventType = FAILED
        elif reason == MARKED_SUCCESS:
            error = {
                "code": ErrorCode.STOPPED_WITHOUT_RESULT,
                "message": "the run was marked successful by hand before a result was collected; no result exists",
                "failed_task": None,
            }
            event_type = CANCELLED
        else:
            error = {
                "code": ErrorCode.CANCELLED,
                "message": "the request was cancelled by the caller",
                "failed_task": None,
            }
            event_type = CANCELLED
        if conflict:
            error = {
                **error,
                "code": ErrorCode.REQUEST_ID_CONFLICT,
                "message": f"{error['message']}; its request id is used by another DAG run with other parameters",
            }
            return build_event(
                event_type=event_type, error=error, conflicting_run_id=record.run_id, **record.common_event_fields()
            )
        return self.story_event(record, event_type, error=error)

    def cancel_databricks_runs(self, record: RequestRecord) -> None:
        """Stop the notebook: the run the job recorded, and any live run of the request by name
        (one whose submit answer was lost). Cancelling a finished run changes nothing."""
        run_ids = {int(run_id)} if (run_id := record.pull("submit", "run_id")) else set()
        try:
            named = active_runs_named(self.databricks_hook, run_name(record.job, record.request_id))
            run_ids |= {int(run["run_id"]) for run in named if life_cycle(run) in LIVE_STATES}
        except Exception:
            self.log.warning("Could not list live runs of %s", record.request_id, exc_info=True)
        for run_id in sorted(run_ids):
            self.databricks_hook.cancel_run(run_id)
            self.log.info("Cancelled Databricks run %s of %s %s", run_id, record.job, record.run_id)
