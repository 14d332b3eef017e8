"""Contract: the Airflow provider's DatabricksHook (sync and async paths) works against the emulator."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import pytest
from airflow.providers.databricks.hooks.databricks import DatabricksHook, RunState
from airflow.providers.databricks.utils.databricks import extract_failed_task_errors

from dsbridge_local.emulator.server import BackgroundServer
from tests.emulator.conftest import hook_connection


@pytest.fixture
def hook(emulator: BackgroundServer, monkeypatch: pytest.MonkeyPatch) -> Iterator[DatabricksHook]:
    monkeypatch.setenv("AIRFLOW_CONN_DATABRICKS_DEFAULT", hook_connection(emulator.port))
    yield DatabricksHook(retry_limit=2, retry_delay=0.1)


def _payload(path: str, **params: object) -> dict:
    return {
        "run_name": "hook",
        "tasks": [
            {
                "task_key": "nb",
                "notebook_task": {"notebook_path": path, "base_parameters": params},
                "new_cluster": {"spark_version": "15.4.x-scala2.12", "num_workers": 1},
            }
        ],
        "timeout_seconds": "120",  # the operator's normalise() sends numbers as strings
        "idempotency_token": f"hook-{time.time_ns()}",
    }


def _wait(hook: DatabricksHook, run_id: int, timeout: float = 20) -> RunState:
    deadline = time.monotonic() + timeout
    while True:
        state = hook.get_run_state(run_id)
        if state.is_terminal:
            return state
        assert time.monotonic() < deadline, state
        time.sleep(0.02)


def test_hook_submit_success_and_output(hook: DatabricksHook) -> None:
    run_id = hook.submit_run(_payload("/jobs/echo", name="hook", request_id=7))
    assert hook.get_run_page_url(run_id).startswith("http://127.0.0.1:")
    assert hook.get_job_id(run_id)
    state = _wait(hook, run_id)
    assert state.is_successful
    task = hook.get_run_tasks(run_id)[0]
    out = hook.get_run_output(task["run_id"])
    assert '"name": "hook"' in out["notebook_output"]["result"]
    assert '"request_id": "7"' in out["notebook_output"]["result"]


def test_hook_failure_errors_as_the_operator_extracts_them(hook: DatabricksHook) -> None:
    run_id = hook.submit_run(_payload("/jobs/fail"))
    state = _wait(hook, run_id)
    assert state.result_state == "FAILED" and not state.is_successful
    errors = extract_failed_task_errors(hook, hook.get_run(run_id), state)
    assert errors and errors[0]["error"] == "ValueError: bad threshold 42"


def test_hook_cancel(hook: DatabricksHook) -> None:
    run_id = hook.submit_run(_payload("/jobs/sleep", seconds=30))
    deadline = time.monotonic() + 10
    while hook.get_run_state_lifecycle(run_id) != "RUNNING":
        assert time.monotonic() < deadline
        time.sleep(0.02)
    hook.cancel_run(run_id)
    state = _wait(hook, run_id)
    assert state.result_state == "CANCELED"


def test_async_hook_sends_get_with_json_body(hook: DatabricksHook) -> None:
    run_id = hook.submit_run(_payload("/jobs/echo"))
    _wait(hook, run_id)

    async def read() -> tuple[RunState, str, dict]:
        async with hook:
            state = await hook.a_get_run_state(run_id)
            url = await hook.a_get_run_page_url(run_id)
            run = await hook.a_get_run(run_id)
            return state, url, run

    state, url, run = asyncio.run(read())
    assert state.is_successful and url.endswith(f"/run/{run_id}") and run["run_id"] == run_id


def test_hook_does_not_retry_4xx(hook: DatabricksHook) -> None:
    from airflow.providers.databricks.exceptions import DatabricksApiError

    started = time.monotonic()
    with pytest.raises(DatabricksApiError) as caught:
        hook.get_run_state(424242424)
    assert caught.value.http_status_code == 404
    assert "RESOURCE_DOES_NOT_EXIST" in str(caught.value)
    assert time.monotonic() - started < 1.0
