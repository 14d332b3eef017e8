"""From what the bench observed about each request to its record, and from records to a summary.

Pure functions over plain data (what the Airflow API, the emulator and the service answered), so
the arithmetic is unit-tested without a stack. Times are wall-clock UTC on this one machine.

Per request: trigger → submit is the DAG run's `queued_at` to the first task's start; the
notebook's own time is the emulator's task run `start_time` → `end_time`; notebook end → callback
is that end to the service's `received_at` of the first event. Overhead is the whole span from the
REST trigger to the callback received, minus the notebook's own time.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from dsbridge_local.bench.stats import median_max, per_minute, spread

PATHS = ("dsbridge", "baseline")
# The task whose start ends "trigger → submit", per path.
FIRST_TASK = {"dsbridge": "submit", "baseline": "run_notebook"}
SUCCEEDED = "request.succeeded"


@dataclass
class Observation:
    """Everything the bench saw about one request, as the sources answered it."""

    path: str
    dag_id: str
    request_id: str
    triggered_at: datetime | None = None
    trigger_error: str | None = None
    # The bench's own verdict while waiting: why it stopped waiting without a callback.
    gave_up: str | None = None
    dag_run: dict[str, Any] | None = None
    task_instances: list[dict[str, Any]] = field(default_factory=list)
    databricks_runs: list[dict[str, Any]] = field(default_factory=list)
    api_calls: dict[str, int] = field(default_factory=dict)
    events: list[dict[str, Any]] = field(default_factory=list)
    worker_executions: dict[str, int] = field(default_factory=dict)


def parse_time(value: Any) -> datetime | None:
    """An ISO 8601 string (Airflow, the service) or epoch milliseconds (Databricks); 0/None: unknown."""
    if value in (None, "", 0):
        return None
    if isinstance(value, int | float):
        return datetime.fromtimestamp(value / 1000, tz=UTC)
    parsed = datetime.fromisoformat(str(value))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _seconds(start: datetime | None, end: datetime | None) -> float | None:
    return None if start is None or end is None else round((end - start).total_seconds(), 3)


def _iso(when: datetime | None) -> str | None:
    return when.isoformat(timespec="milliseconds") if when else None


def notebook_span(runs: list[dict[str, Any]]) -> tuple[datetime | None, datetime | None]:
    """Start and end of the notebook task of the request's last Databricks run."""
    if not runs:
        return None, None
    last = max(runs, key=lambda run: int(run.get("run_id", 0)))
    tasks = last.get("tasks") or [last]
    return parse_time(tasks[0].get("start_time")), parse_time(tasks[0].get("end_time"))


def last_state(obs: Observation) -> str:
    """A one-line account of where the request stood (for requests that did not complete)."""
    if obs.trigger_error:
        return f"trigger refused: {obs.trigger_error}"
    run_state = (obs.dag_run or {}).get("state") or "unknown"
    tasks = " ".join(f"{ti['task_id']}={ti.get('state') or '-'}" for ti in obs.task_instances)
    return f"dag run {run_state}" + (f"; {tasks}" if tasks else "") + (f" ({obs.gave_up})" if obs.gave_up else "")


def build_record(obs: Observation) -> dict[str, Any]:
    """The per-request record of the JSON output."""
    events = sorted(obs.events, key=lambda e: e.get("received_at") or "")
    event_ids = {e["event_id"] for e in events}
    callback_at = parse_time(events[0]["received_at"]) if events else None
    run = obs.dag_run or {}
    queued_at = parse_time(run.get("queued_at"))
    first = next((ti for ti in obs.task_instances if ti.get("task_id") == FIRST_TASK.get(obs.path)), None)
    submit_at = parse_time(first.get("start_date")) if first else None
    nb_start, nb_end = notebook_span(obs.databricks_runs)
    notebook_s = _seconds(nb_start, nb_end)
    total_s = _seconds(obs.triggered_at, callback_at)
    # A callback that came only after the bench gave up (e.g. past the timeout) does not complete it.
    completed = callback_at is not None and obs.trigger_error is None and obs.gave_up is None
    overhead_s = (
        round(total_s - notebook_s, 3) if completed and total_s is not None and notebook_s is not None else None
    )
    return {
        "path": obs.path,
        "dag_id": obs.dag_id,
        "request_id": obs.request_id,
        "completed": completed,
        "outcome": events[-1]["payload"].get("type") if events else None,
        "dag_run_state": run.get("state"),
        "last_state": None if completed else last_state(obs),
        "callbacks": len(event_ids),
        "deliveries": sum(int(e.get("deliveries", 1)) for e in events),
        "databricks_run_ids": sorted(int(r["run_id"]) for r in obs.databricks_runs),
        "triggered_at": _iso(obs.triggered_at),
        "queued_at": _iso(queued_at),
        "submit_started_at": _iso(submit_at),
        "notebook_started_at": _iso(nb_start),
        "notebook_ended_at": _iso(nb_end),
        "callback_received_at": _iso(callback_at),
        "trigger_to_submit_s": _seconds(queued_at, submit_at),
        "submit_to_notebook_s": _seconds(submit_at, nb_start),
        "notebook_s": notebook_s,
        "notebook_to_callback_s": _seconds(nb_end, callback_at),
        "total_s": total_s,
        "overhead_s": overhead_s,
        "api_calls": sum(obs.api_calls.values()) if obs.databricks_runs else None,
        "api_calls_by_endpoint": dict(obs.api_calls),
        "worker_executions": sum(obs.worker_executions.values()) if obs.dag_run else None,
        "worker_executions_by_task": dict(obs.worker_executions),
    }


def _known(records: list[dict[str, Any]], key: str) -> list[float]:
    return [r[key] for r in records if r.get(key) is not None]


def restarts_between(before: dict[str, Any] | None, after: dict[str, Any] | None) -> dict[str, int] | None:
    """Restarts per component between two supervisor `status.json` reads (None: not readable)."""
    if not before or not after:
        return None

    def counts(status: dict[str, Any]) -> dict[str, int]:
        return {name: int(part.get("restarts") or 0) for name, part in status.get("components", {}).items()}

    first, last = counts(before), counts(after)
    return {name: n - first.get(name, 0) for name, n in sorted(last.items()) if n > first.get(name, 0)}


def summarize(
    records: list[dict[str, Any]],
    peak_worker_slots: int | None,
    component_restarts: dict[str, int] | None = None,
) -> dict[str, Any]:
    """One path's figures; `records` are `build_record` results (kept under `records`)."""
    completed = [r for r in records if r["completed"]]
    triggers = [t for r in records if (t := parse_time(r["triggered_at"])) is not None]
    callbacks = [t for r in completed if (t := parse_time(r["callback_received_at"])) is not None]
    span = _seconds(min(triggers), max(callbacks)) if triggers and callbacks else None
    return {
        "requests": len(records),
        "completed": len(completed),
        "succeeded": sum(1 for r in completed if r["outcome"] == SUCCEEDED),
        "callbacks": sum(r["callbacks"] for r in records),
        "requests_with_one_callback": sum(1 for r in records if r["callbacks"] == 1),
        "overhead_s": spread(_known(completed, "overhead_s")),
        "total_s": spread(_known(completed, "total_s")),
        "phases_s": {
            key: median_max(_known(completed, f"{key}_s"))
            for key in ("trigger_to_submit", "submit_to_notebook", "notebook", "notebook_to_callback")
        },
        "api_calls_per_request": median_max(_known(records, "api_calls")),
        "worker_executions_per_request": median_max(_known(records, "worker_executions")),
        "throughput_per_min": per_minute(len(completed), span),
        "peak_worker_slots": peak_worker_slots,
        # Components the stack's supervisor restarted during the phase ({}: none; None: unknown).
        "component_restarts": component_restarts,
        "records": records,
    }


def all_well(summary: dict[str, Any]) -> bool:
    """Every request completed and succeeded with exactly one callback."""
    n = summary["requests"]
    return n > 0 and summary["completed"] == summary["succeeded"] == summary["requests_with_one_callback"] == n
