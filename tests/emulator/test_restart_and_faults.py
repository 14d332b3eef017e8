"""Persistence across restarts (including a hard kill) and fault injection."""

from __future__ import annotations

import datetime
import os
import sqlite3
import time
from pathlib import Path

import httpx
import pytest
from airflow.providers.databricks.hooks.databricks import DatabricksHook
from databricks.sdk import WorkspaceClient
from databricks.sdk.service import jobs

from dsbridge_local.emulator.app import EmulatorConfig
from dsbridge_local.emulator.faults import FaultSettings
from dsbridge_local.emulator.server import start_background
from tests.emulator.conftest import TOKEN, EmulatorProcess, hook_connection, output, submit, wait_for


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and stat.read_text().split()[2] == "Z")


def test_hard_kill_and_restart(workspace: Path, tmp_path: Path) -> None:
    state = tmp_path / "state"
    first = EmulatorProcess(workspace, state)
    child_pid = 0
    try:
        with first.client() as http:
            done = wait_for(http, submit(http, "/jobs/echo", {"name": "persisted"}, idempotency_token="restart-1"))
            active = submit(http, "/jobs/sleep", {"seconds": "60"}, idempotency_token="restart-2")
            wait_for(http, active, lambda run: run["state"]["life_cycle_state"] == "RUNNING")
        with sqlite3.connect(state / "emulator.sqlite3") as db:
            child_pid = int(db.execute("SELECT pid FROM runs WHERE parent_id = ?", (active,)).fetchone()[0])
        assert _pid_alive(child_pid)
        first.kill()  # SIGKILL: no chance to clean up
    finally:
        first.kill()
    second = EmulatorProcess(workspace, state)
    try:
        with second.client() as http:
            old = http.get("/api/2.2/jobs/runs/get", params={"run_id": done["run_id"]}).json()
            assert old["state"]["result_state"] == "SUCCESS"
            assert "persisted" in output(http, old["tasks"][0]["run_id"])["notebook_output"]["result"]
            lost = http.get("/api/2.2/jobs/runs/get", params={"run_id": active}).json()
            assert lost["state"]["life_cycle_state"] == "INTERNAL_ERROR"
            assert "emulator stopped" in lost["state"]["state_message"]
            assert lost["tasks"][0]["state"]["life_cycle_state"] == "INTERNAL_ERROR"
            # The idempotency tokens survived too.
            assert submit(http, "/jobs/echo", idempotency_token="restart-1") == done["run_id"]
            # New run ids keep growing.
            assert submit(http, "/jobs/echo") > active
        deadline = time.monotonic() + 5
        while _pid_alive(child_pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _pid_alive(child_pid), "the orphaned notebook process was not killed"
    finally:
        second.terminate()
        if child_pid and _pid_alive(child_pid):
            os.killpg(child_pid, 9)


def test_graceful_stop_ends_active_runs_as_internal_error(workspace: Path, tmp_path: Path) -> None:
    config = EmulatorConfig(workspace=workspace, state_dir=tmp_path, kill_grace_s=0.5)
    server = start_background(config)
    with httpx.Client(base_url=server.url, timeout=10) as http:
        run_id = submit(http, "/jobs/sleep", {"seconds": "60"})
        wait_for(http, run_id, lambda run: run["state"]["life_cycle_state"] == "RUNNING")
    server.stop()
    again = start_background(EmulatorConfig(workspace=workspace, state_dir=tmp_path))
    try:
        with httpx.Client(base_url=again.url, timeout=10) as http:
            run = http.get("/api/2.2/jobs/runs/get", params={"run_id": run_id}).json()
            assert run["state"]["life_cycle_state"] == "INTERNAL_ERROR"
    finally:
        again.stop()


def test_faults_429_503_are_retried_by_sdk_and_hook(
    workspace: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = FaultSettings(rate_429=0.3, rate_503=0.3, retry_after_s=0, seed=7)
    server = start_background(EmulatorConfig(workspace=workspace, state_dir=tmp_path, token=TOKEN, faults=settings))
    try:
        statuses = []
        with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10) as http:
            for _ in range(40):
                response = http.get("/api/2.2/jobs/runs/get", params={"run_id": 1})
                statuses.append(response.status_code)
                if response.status_code == 429:
                    assert response.headers["Retry-After"] == "0"
                    assert response.json()["error_code"] == "REQUEST_LIMIT_EXCEEDED"
                if response.status_code == 503:
                    assert response.json()["error_code"] == "TEMPORARILY_UNAVAILABLE"
            assert {429, 503, 404} <= set(statuses)
            # Replayable: the same seed gives the same sequence.
            http.post("/emulator/faults", json={"seed": 7})
            again = [http.get("/api/2.2/jobs/runs/get", params={"run_id": 1}).status_code for _ in range(40)]
            assert again == statuses
            # Bounded settings.
            assert http.post("/emulator/faults", json={"rate_429": 2}).status_code == 400
            assert http.post("/emulator/faults", json={"latency_ms": 10**9}).status_code == 400
            assert http.post("/emulator/faults", json={"bogus": 1}).status_code == 400

        ws = WorkspaceClient(host=server.url, token=TOKEN)
        run = ws.jobs.submit(
            run_name="storm", tasks=[jobs.SubmitTask(task_key="t", notebook_task=jobs.NotebookTask("/jobs/echo"))]
        ).result(timeout=datetime.timedelta(seconds=60))
        assert run.state is not None and run.state.result_state == jobs.RunResultState.SUCCESS

        monkeypatch.setenv("AIRFLOW_CONN_DATABRICKS_DEFAULT", hook_connection(server.port))
        hook = DatabricksHook(retry_limit=8, retry_delay=0.01)
        hook.retry_args["wait"] = __import__("tenacity").wait_fixed(0.01)
        run_id = hook.submit_run(
            {"run_name": "storm", "tasks": [{"task_key": "t", "notebook_task": {"notebook_path": "/jobs/echo"}}]}
        )
        assert hook.get_run_page_url(run_id)
    finally:
        server.stop()


def test_a_held_submit_answer_still_creates_the_run(workspace: Path, tmp_path: Path) -> None:
    """A caller that gives up on a slow runs/submit answer leaves a run behind, as on a workspace."""
    server = start_background(EmulatorConfig(workspace=workspace, state_dir=tmp_path))
    try:
        with httpx.Client(base_url=server.url, timeout=10) as http:
            assert http.post("/emulator/faults", json={"submit_answer_delay_ms": 3000}).status_code == 200
            with pytest.raises(httpx.ReadTimeout):
                http.post(
                    "/api/2.2/jobs/runs/submit",
                    json={
                        "run_name": "lost",
                        "tasks": [{"task_key": "t", "notebook_task": {"notebook_path": "/jobs/echo"}}],
                    },
                    timeout=0.5,
                )
            runs = http.get("/api/2.2/jobs/runs/list").json()["runs"]
            assert [run["run_name"] for run in runs] == ["lost"]
            assert http.post("/emulator/faults", json={"submit_answer_delay_ms": -1}).status_code == 400
    finally:
        server.stop()


def test_forced_terminal_state_and_latency(workspace: Path, tmp_path: Path) -> None:
    server = start_background(EmulatorConfig(workspace=workspace, state_dir=tmp_path))
    try:
        with httpx.Client(base_url=server.url, timeout=10) as http:
            assert http.post("/emulator/faults", json={"force_state": "FAILED", "latency_ms": 50}).status_code == 200
            started = time.monotonic()
            run = wait_for(http, submit(http, "/jobs/echo"))
            assert time.monotonic() - started >= 0.1
            assert run["state"]["result_state"] == "FAILED"
            assert "fault injection" in output(http, run["tasks"][0]["run_id"])["error"]
            http.post("/emulator/faults", json={"force_state": "INTERNAL_ERROR", "latency_ms": 0})
            assert wait_for(http, submit(http, "/jobs/echo"))["state"]["life_cycle_state"] == "INTERNAL_ERROR"
            http.post("/emulator/faults", json={"force_state": None})
            assert wait_for(http, submit(http, "/jobs/echo"))["state"]["result_state"] == "SUCCESS"
    finally:
        server.stop()
