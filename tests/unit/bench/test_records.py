"""From observations to records and summaries: the arithmetic of every figure the bench reports."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from dsbridge_local.bench.records import Observation, all_well, build_record, last_state, parse_time, summarize

T0 = datetime(2026, 1, 5, 12, 0, 0, tzinfo=UTC)


def ms(offset_s: float) -> int:
    return int((T0 + timedelta(seconds=offset_s)).timestamp() * 1000)


def iso(offset_s: float, z: bool = False) -> str:
    text = (T0 + timedelta(seconds=offset_s)).isoformat()
    return text.replace("+00:00", "Z") if z else text


def event(request_id: str, at: float, event_id: str = "evt_1", kind: str = "request.succeeded") -> dict[str, Any]:
    return {
        "event_id": event_id,
        "received_at": iso(at),
        "deliveries": 1,
        "payload": {"type": kind, "request_id": request_id, "job": "bench_sleep"},
    }


def observation(request_id: str = "r-1", path: str = "dsbridge", shift: float = 0.0) -> Observation:
    """Trigger at 0, queued at 0.2, submit at 1, notebook 2..7, callback at 9 (all + shift)."""
    first = "submit" if path == "dsbridge" else "run_notebook"
    return Observation(
        path=path,
        dag_id="bench_sleep",
        request_id=request_id,
        triggered_at=T0 + timedelta(seconds=shift),
        dag_run={"state": "success", "queued_at": iso(0.2 + shift, z=True)},
        task_instances=[
            {"task_id": first, "state": "success", "start_date": iso(1 + shift, z=True)},
            {"task_id": "notify_success", "state": "success", "start_date": iso(8 + shift, z=True)},
        ],
        databricks_runs=[
            {
                "run_id": 1001,
                "start_time": ms(1.5 + shift),
                "tasks": [{"start_time": ms(2 + shift), "end_time": ms(7 + shift)}],
            }
        ],
        api_calls={"runs/submit": 1, "runs/get": 4, "runs/get-output": 1, "runs/cancel": 0},
        events=[event(request_id, 9 + shift)],
        worker_executions={first: 1, "wait": 2, "notify_success": 1},
    )


def test_record_of_a_completed_request() -> None:
    record = build_record(observation())
    assert record["completed"] is True
    assert record["outcome"] == "request.succeeded"
    assert record["last_state"] is None
    assert record["callbacks"] == 1
    assert record["trigger_to_submit_s"] == 0.8
    assert record["submit_to_notebook_s"] == 1.0
    assert record["notebook_s"] == 5.0
    assert record["notebook_to_callback_s"] == 2.0
    assert record["total_s"] == 9.0
    assert record["overhead_s"] == 4.0  # 9 s in all, 5 s of which the notebook's own
    assert record["api_calls"] == 6
    assert record["worker_executions"] == 4
    assert record["databricks_run_ids"] == [1001]
    assert record["callback_received_at"] == "2026-01-05T12:00:09.000+00:00"


def test_baseline_starts_with_its_own_first_task() -> None:
    record = build_record(observation(path="baseline"))
    assert record["trigger_to_submit_s"] == 0.8


def test_duplicate_events_and_several_runs() -> None:
    obs = observation()
    obs.events = [event("r-1", 12, "evt_2", "request.failed"), event("r-1", 9)]
    obs.events[0]["deliveries"] = 2
    # A second Databricks run of the request: the last one gives the notebook's times.
    obs.databricks_runs.append({"run_id": 1003, "tasks": [{"start_time": ms(3), "end_time": ms(6)}]})
    record = build_record(obs)
    assert record["callbacks"] == 2
    assert record["deliveries"] == 3
    assert record["outcome"] == "request.failed"  # the latest event
    assert record["total_s"] == 9.0  # the first callback ends the request
    assert record["notebook_s"] == 3.0
    assert record["databricks_run_ids"] == [1001, 1003]


def test_a_request_without_callback_is_not_completed_and_says_where_it_stood() -> None:
    obs = observation()
    obs.events = []
    obs.gave_up = "no callback within 900s"
    obs.dag_run = {"state": "running", "queued_at": iso(0.2)}
    obs.task_instances = [{"task_id": "submit", "state": "success"}, {"task_id": "wait", "state": "deferred"}]
    record = build_record(obs)
    assert record["completed"] is False
    assert record["overhead_s"] is None and record["total_s"] is None
    assert record["last_state"] == "dag run running; submit=success wait=deferred (no callback within 900s)"


def test_a_refused_trigger() -> None:
    obs = Observation(path="dsbridge", dag_id="bench_sleep", request_id="r-9", trigger_error="AirflowApiError: 403")
    record = build_record(obs)
    assert record["completed"] is False
    assert record["last_state"] == "trigger refused: AirflowApiError: 403"
    assert record["api_calls"] is None and record["worker_executions"] is None
    assert last_state(obs) == record["last_state"]


def test_summary() -> None:
    records = [build_record(observation(f"r-{i}", shift=i * 2.0)) for i in range(4)]
    records[3]["overhead_s"] = 8.0
    summary = summarize(records, peak_worker_slots=3)
    assert summary["requests"] == summary["completed"] == summary["succeeded"] == 4
    assert summary["callbacks"] == summary["requests_with_one_callback"] == 4
    assert summary["overhead_s"] == {"p50": 4.0, "p95": 7.4, "max": 8.0}
    assert summary["api_calls_per_request"] == {"median": 6, "max": 6}
    assert summary["worker_executions_per_request"] == {"median": 4, "max": 4}
    # 4 requests from the first trigger (0 s) to the last callback (6 + 9 = 15 s).
    assert summary["throughput_per_min"] == 16.0
    assert summary["peak_worker_slots"] == 3
    assert summary["phases_s"]["notebook"] == {"median": 5.0, "max": 5.0}
    assert summary["records"] is records
    assert all_well(summary)


def test_summary_with_nothing_completed() -> None:
    obs = observation()
    obs.events = []
    summary = summarize([build_record(obs)], peak_worker_slots=None)
    assert summary["completed"] == 0
    assert summary["overhead_s"] == {"p50": None, "p95": None, "max": None}
    assert summary["throughput_per_min"] is None
    assert not all_well(summary)
    assert not all_well(summarize([], peak_worker_slots=0))


def test_parse_time() -> None:
    assert parse_time("2026-01-05T12:00:00Z") == T0
    assert parse_time("2026-01-05T12:00:00") == T0  # naive: UTC
    assert parse_time(ms(0)) == T0
    assert parse_time(0) is None and parse_time(None) is None and parse_time("") is None


def test_restarts_between_two_status_reads_name_only_the_components_restarted() -> None:
    from dsbridge_local.bench.records import restarts_between

    def status(**restarts: int) -> dict:
        return {"components": {name: {"state": "running", "restarts": n} for name, n in restarts.items()}}

    before = status(scheduler=1, triggerer=0, s3=0)
    assert restarts_between(before, status(scheduler=1, triggerer=0, s3=0)) == {}
    assert restarts_between(before, status(scheduler=3, triggerer=0, s3=1)) == {"s3": 1, "scheduler": 2}
    assert restarts_between(before, status(scheduler=1, triggerer=0, s3=0, reconciler=1)) == {"reconciler": 1}
    assert restarts_between(None, before) is None
