"""Run life cycle over plain HTTP: timeouts, cancel, queueing, idempotency, outputs, notebook features."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import httpx
import pytest

from dsbridge_local.emulator.app import EmulatorConfig
from dsbridge_local.emulator.server import start_background
from tests.emulator.conftest import output, submit, wait_for


def test_run_timeout_kills_the_notebook(client: httpx.Client) -> None:
    started = time.monotonic()
    run_id = submit(client, "/jobs/sleep", {"seconds": "30"}, timeout_seconds="1")
    run = wait_for(client, run_id, timeout=10)
    assert time.monotonic() - started < 6
    assert run["state"]["result_state"] == "TIMEDOUT"
    assert run["state"]["user_cancelled_or_timedout"] is True
    assert run["tasks"][0]["state"]["result_state"] == "TIMEDOUT"
    assert "timed out" in run["state"]["state_message"]


def test_task_timeout_and_sigkill_after_grace(client: httpx.Client) -> None:
    body = {
        "run_name": "stubborn",
        "tasks": [{"task_key": "s", "timeout_seconds": 1, "notebook_task": {"notebook_path": "/jobs/stubborn"}}],
    }
    run_id = client.post("/api/2.2/jobs/runs/submit", json=body).json()["run_id"]
    run = wait_for(client, run_id, timeout=15)
    assert run["tasks"][0]["state"]["result_state"] == "TIMEDOUT"
    log = client.get(f"/emulator/runs/{run['tasks'][0]['run_id']}/log").text
    assert "ignoring SIGTERM" in log


def test_cancel_running_and_idempotent_cancel(client: httpx.Client) -> None:
    run_id = submit(client, "/jobs/sleep", {"seconds": "30"})
    wait_for(client, run_id, lambda run: run["state"]["life_cycle_state"] == "RUNNING")
    assert client.post("/api/2.2/jobs/runs/cancel", json={"run_id": run_id}).json() == {}
    run = wait_for(client, run_id, timeout=10)
    assert run["state"]["result_state"] == "CANCELED"
    assert run["state"]["user_cancelled_or_timedout"] is True
    assert run["status"]["termination_details"]["code"] == "USER_CANCELED"
    # Cancelling a finished run is a no-op, as on Databricks.
    assert client.post("/api/2.1/jobs/runs/cancel", json={"run_id": run_id}).status_code == 200
    assert wait_for(client, run_id)["state"]["result_state"] == "CANCELED"


def test_idempotency_token_returns_the_same_run(client: httpx.Client) -> None:
    token = f"job-x-request-{time.time_ns()}"
    first = submit(client, "/jobs/echo", {"name": "a"}, idempotency_token=token)
    second = submit(client, "/jobs/echo", {"name": "b"}, idempotency_token=token)
    assert first == second
    result = json.loads(output(client, wait_for(client, first)["tasks"][0]["run_id"])["notebook_output"]["result"])
    assert result["name"] == "a"
    too_long = client.post(
        "/api/2.2/jobs/runs/submit",
        json={
            "idempotency_token": "x" * 65,
            "tasks": [{"task_key": "a", "notebook_task": {"notebook_path": "/jobs/echo"}}],
        },
    )
    assert too_long.status_code == 400 and too_long.json()["error_code"] == "INVALID_PARAMETER_VALUE"


def test_queueing_over_the_concurrency_limit(workspace: Path, tmp_path: Path) -> None:
    server = start_background(EmulatorConfig(workspace=workspace, state_dir=tmp_path, max_concurrent_runs=1))
    try:
        with httpx.Client(base_url=server.url, timeout=30) as http:
            first = submit(http, "/jobs/sleep", {"seconds": "0.6"})
            second = submit(http, "/jobs/echo")
            queued = http.get("/api/2.2/jobs/runs/get", params={"run_id": second}).json()
            assert queued["state"]["life_cycle_state"] == "QUEUED"
            assert "maximum concurrent runs" in queued["state"]["queue_reason"]
            assert queued["status"]["queue_details"]["code"] == "ACTIVE_RUNS_LIMIT_REACHED"
            assert http.get("/health").json()["queued_runs"] == 1
            done = wait_for(http, second, timeout=15)
            assert done["state"]["result_state"] == "SUCCESS"
            assert done["queue_duration"] > 0
            assert wait_for(http, first)["state"]["result_state"] == "SUCCESS"
            # A queued run can be cancelled before it ever starts.
            blocker = submit(http, "/jobs/sleep", {"seconds": "0.6"})
            waiting = submit(http, "/jobs/echo")
            http.post("/api/2.2/jobs/runs/cancel", json={"run_id": waiting})
            cancelled = wait_for(http, waiting)
            assert cancelled["state"]["result_state"] == "CANCELED"
            assert cancelled["tasks"][0]["state"]["result_state"] == "CANCELED"
            wait_for(http, blocker)
    finally:
        server.stop()


def test_exit_value_truncated_at_5_mb(client: httpx.Client) -> None:
    run = wait_for(client, submit(client, "/jobs/big"), timeout=20)
    out = output(client, run["tasks"][0]["run_id"])
    assert out["notebook_output"]["truncated"] is True
    assert len(out["notebook_output"]["result"]) == 5 * 1024 * 1024


def test_run_inlining_md_skipping_and_pip_warning(client: httpx.Client) -> None:
    run = wait_for(client, submit(client, "/jobs/uses_lib"))
    task_run_id = run["tasks"][0]["run_id"]
    assert output(client, task_run_id)["notebook_output"]["result"] == "42"
    log = client.get(f"/emulator/runs/{task_run_id}/log").text
    assert "%pip cell" in log and "ignored" in log


def test_widget_defaults_and_missing_widget(client: httpx.Client) -> None:
    run = wait_for(client, submit(client, "/jobs/echo"))
    result = json.loads(output(client, run["tasks"][0]["run_id"])["notebook_output"]["result"])
    assert result == {"greeting": "hello", "name": "world", "request_id": None}
    run = wait_for(client, submit(client, "/jobs/no_widget"))
    out = output(client, run["tasks"][0]["run_id"])
    assert out["error"] == "InputWidgetNotDefined: No input widget named missing is defined"


def test_success_without_exit_value_and_plain_file(client: httpx.Client) -> None:
    run = wait_for(client, submit(client, "/jobs/plain"))
    assert run["state"]["result_state"] == "SUCCESS"
    assert output(client, run["tasks"][0]["run_id"])["notebook_output"] == {}


def test_local_dbutils_fs(client: httpx.Client, tmp_path: Path) -> None:
    target = f"file:{tmp_path}/out/value.txt"
    run = wait_for(client, submit(client, "/jobs/fs_local", {"path": target}))
    assert output(client, run["tasks"][0]["run_id"])["notebook_output"]["result"] == "hi there"
    assert (tmp_path / "out" / "value.txt").read_text() == "hi there"


def test_spark_without_pyspark_is_a_clear_error(client: httpx.Client) -> None:
    pytest.importorskip("dsbridge")
    run = wait_for(client, submit(client, "/jobs/spark"))
    error = output(client, run["tasks"][0]["run_id"]).get("error", "")
    assert ("pyspark is not installed" in error) or run["state"]["result_state"] == "SUCCESS"


def test_multi_task_dependencies_and_upstream_failure(client: httpx.Client) -> None:
    body = {
        "run_name": "graph",
        "tasks": [
            {"task_key": "a", "notebook_task": {"notebook_path": "/jobs/echo"}},
            {"task_key": "b", "depends_on": [{"task_key": "a"}], "notebook_task": {"notebook_path": "/jobs/fail"}},
            {"task_key": "c", "depends_on": [{"task_key": "b"}], "notebook_task": {"notebook_path": "/jobs/echo"}},
        ],
    }
    run_id = client.post("/api/2.2/jobs/runs/submit", json=body).json()["run_id"]
    run = wait_for(client, run_id)
    states = {task["task_key"]: task["state"].get("result_state") for task in run["tasks"]}
    assert states == {"a": "SUCCESS", "b": "FAILED", "c": "UPSTREAM_FAILED"}
    assert run["state"]["result_state"] == "FAILED"
    assert "Task b failed" in run["state"]["state_message"]
    parts = client.get(f"/emulator/runs/{run_id}/log").text
    assert "===== task a" in parts and "about to fail" in parts


def test_legacy_single_task_form(client: httpx.Client) -> None:
    body = {"run_name": "legacy", "notebook_task": {"notebook_path": "/jobs/echo", "base_parameters": {"name": "old"}}}
    run_id = client.post("/api/2.1/jobs/runs/submit", json=body).json()["run_id"]
    run = wait_for(client, run_id)
    assert run["format"] == "SINGLE_TASK" and len(run["tasks"]) == 1
    # Legacy single-task runs answer get-output on the parent, as Jobs API 2.0 runs did.
    out = output(client, run_id)
    assert json.loads(out["notebook_output"]["result"])["name"] == "old"


def test_structured_logs_carry_run_and_request_id(client: httpx.Client, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="dsbridge_local.emulator"):
        run_id = submit(client, "/jobs/echo", {"request_id": "req-log-7"})
        wait_for(client, run_id)
    events = [json.loads(record.getMessage()) for record in caplog.records if record.name == "dsbridge_local.emulator"]
    mine = [event for event in events if event.get("run_id") == run_id]
    assert {"run.submitted", "task.running", "task.finished", "run.finished"} <= {e["event"] for e in mine}
    assert any(event.get("request_id") == "req-log-7" for event in mine)


def test_runs_list_filters_and_delete(client: httpx.Client) -> None:
    run_id = submit(client, "/jobs/echo")
    wait_for(client, run_id)
    listed = client.get("/api/2.2/jobs/runs/list", params={"completed_only": "true", "limit": 25}).json()
    assert any(run["run_id"] == run_id for run in listed["runs"])
    assert all("tasks" not in run for run in listed["runs"])
    active = client.get("/api/2.2/jobs/runs/list", params={"active_only": "true"}).json()
    assert all(run["state"]["life_cycle_state"] != "TERMINATED" for run in active.get("runs", []))
    both = client.get("/api/2.2/jobs/runs/list", params={"active_only": "true", "completed_only": "true"})
    assert both.status_code == 400
    assert client.post("/api/2.2/jobs/runs/delete", json={"run_id": run_id}).status_code == 200
    assert client.get("/api/2.2/jobs/runs/get", params={"run_id": run_id}).status_code == 404
