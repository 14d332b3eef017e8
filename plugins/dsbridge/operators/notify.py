"""Deliver the request's one final event to the optimization service.

An `HttpOperator` to the optimization-service connection: the target comes only from that
connection and the contract's callback path, never from the request. The event is built once and
kept in the task's state store, so every retry sends the same bytes under the same event id, with a
fresh Standard Webhooks signature.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any, Literal
from urllib.parse import quote

from airflow.providers.http.operators.http import HttpOperator
from airflow.sdk import BaseHook

from dsbridge.callback.event import CANCELLED, FAILED, SUCCEEDED, build_event, encode
from dsbridge.callback.signing import sign_headers
from dsbridge.contract import JobContract
from dsbridge.contract.params import request_id_for
from dsbridge.operators.submit import clear_number
from dsbridge.outcome import recorded_failure
from dsbridge.settings import SERVICE_CONN_ID, load_settings

EVENT_STATE_KEY = "dsbridge_event"
HTTP_TIMEOUT_SECONDS = 30


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


class CallbackOperator(HttpOperator):
    """POST the signed `request.succeeded` (outcome="success") or failure/cancel event."""

    def __init__(
        self,
        *,
        contract: JobContract,
        outcome: Literal["success", "failure"],
        http_conn_id: str = SERVICE_CONN_ID,
        **kwargs: Any,
    ) -> None:
        path = contract.success_path if outcome == "success" else contract.failure_path
        super().__init__(
            http_conn_id=http_conn_id,
            endpoint=path,
            method="POST",
            extra_options={"timeout": HTTP_TIMEOUT_SECONDS},
            deferrable=False,
            **kwargs,
        )
        self.contract = contract
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
        event = self.build(context)
        if store is not None:
            store.set(EVENT_STATE_KEY, json.dumps(event))
        return event

    def build(self, context: Any) -> dict[str, Any]:
        ti = context["ti"]
        dag_run = context["dag_run"]
        request = ti.xcom_pull(task_ids="submit", key="request") or {}
        run = ti.xcom_pull(task_ids="wait")
        run_page_url = (run or {}).get("run_page_url") or ti.xcom_pull(task_ids="submit", key="run_page_url")
        run_id = (run or {}).get("run_id") or ti.xcom_pull(task_ids="submit", key="run_id")
        settings = load_settings()
        common: dict[str, Any] = {
            "job": self.contract.name,
            "request_id": request.get("request_id") or _request_id(context),
            "attempt": clear_number(context),
            "airflow_run_url": (
                f"{settings.airflow_base_url}/dags/{quote(dag_run.dag_id)}/runs/{quote(dag_run.run_id, safe='')}"
            ),
            "databricks_run_url": run_page_url,
            "databricks_run_id": int(run_id) if run_id else None,
            "timings": timings_of(run, getattr(dag_run, "start_date", None)),
        }
        if self.outcome == "success":
            collected = ti.xcom_pull(task_ids="collect") or {}
            return build_event(
                event_type=SUCCEEDED,
                result=collected.get("result"),
                result_inline=bool(collected.get("result_inline")),
                result_location=collected.get("result_location"),
                **common,
            )
        failure = recorded_failure(context) or {
            "type": FAILED,
            "message": "a step failed without a recorded reason; see the Airflow run",
        }
        event_type = CANCELLED if failure.pop("type", FAILED) == CANCELLED else FAILED
        return build_event(event_type=event_type, error=failure, **common)


def _request_id(context: Any) -> str:
    dag_run = context["dag_run"]
    try:
        return request_id_for(dag_run.run_id, context["params"].get("request_id"))
    except ValueError:
        return request_id_for(dag_run.run_id, None)
