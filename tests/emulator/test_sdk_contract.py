"""Contract: the official databricks-sdk WorkspaceClient sees the emulator as a workspace."""

from __future__ import annotations

import json
import time

import httpx
import pytest
from databricks.sdk import WorkspaceClient
from databricks.sdk.errors import InvalidParameterValue, NotFound, PermissionDenied, ResourceDoesNotExist
from databricks.sdk.service import jobs

from dsbridge_local.emulator.server import BackgroundServer
from tests.emulator.conftest import TOKEN, output, sdk_finished, submit, wait_for


@pytest.fixture
def ws(emulator: BackgroundServer) -> WorkspaceClient:
    return WorkspaceClient(host=emulator.url, token=TOKEN)


def _task(path: str, params: dict[str, str] | None = None, key: str = "main") -> jobs.SubmitTask:
    return jobs.SubmitTask(
        task_key=key,
        notebook_task=jobs.NotebookTask(notebook_path=path, base_parameters=params or {}),
        environment_key="default",
    )


def _wait(ws: WorkspaceClient, run_id: int, timeout: float = 20) -> jobs.Run:
    return sdk_finished(ws, run_id, timeout, poll=0.02)


def test_success_with_exit_value_through_submit_result(ws: WorkspaceClient) -> None:
    run = ws.jobs.submit(
        run_name="echo",
        tasks=[_task("/jobs/echo", {"name": "sdk", "request_id": "req-1"})],
        timeout_seconds=60,
    ).result(timeout=__import__("datetime").timedelta(seconds=30))
    assert run.state is not None and run.state.result_state == jobs.RunResultState.SUCCESS
    assert run.run_type == jobs.RunType.SUBMIT_RUN
    assert run.run_page_url and f"/run/{run.run_id}" in run.run_page_url
    assert run.status is not None and run.status.state == jobs.RunLifecycleStateV2State.TERMINATED
    assert run.status.termination_details is not None
    assert run.status.termination_details.code == jobs.TerminationCodeCode.SUCCESS
    assert run.start_time and run.end_time and run.end_time >= run.start_time
    assert run.tasks and len(run.tasks) == 1
    task = run.tasks[0]
    assert task.task_key == "main" and task.run_id != run.run_id and task.attempt_number == 0
    assert task.notebook_task is not None and task.notebook_task.notebook_path == "/jobs/echo"
    assert task.execution_duration is not None and task.setup_duration is not None
    out = ws.jobs.get_run_output(task.run_id)
    assert out.notebook_output is not None and out.notebook_output.truncated is False
    assert json.loads(out.notebook_output.result or "") == {
        "greeting": "hello",  # widget default
        "name": "sdk",  # base parameter
        "request_id": "req-1",
    }
    assert out.metadata is not None and out.metadata.run_id == task.run_id


def test_notebook_exception_gives_error_and_trace(ws: WorkspaceClient) -> None:
    run_id = ws.jobs.submit(run_name="fail", tasks=[_task("/jobs/fail")]).run_id
    run = _wait(ws, run_id)
    assert run.state is not None and run.state.result_state == jobs.RunResultState.FAILED
    assert run.state.state_message and "main" in run.state.state_message
    assert run.tasks is not None
    out = ws.jobs.get_run_output(run.tasks[0].run_id)
    assert out.error == "ValueError: bad threshold 42"
    assert out.error_trace is not None
    assert "Traceback" in out.error_trace and "check(42)" in out.error_trace
    assert "cell 2" in out.error_trace  # cell-relative location
    assert "about to fail" in out.error_trace  # the log tail comes along
    assert out.notebook_output is None


def test_get_output_of_multi_task_parent_is_refused(ws: WorkspaceClient) -> None:
    run_id = ws.jobs.submit(run_name="one", tasks=[_task("/jobs/echo")]).run_id
    _wait(ws, run_id)
    with pytest.raises(InvalidParameterValue, match="multiple tasks is not supported"):
        ws.jobs.get_run_output(run_id)


def test_unknown_run_is_resource_does_not_exist(ws: WorkspaceClient) -> None:
    with pytest.raises(ResourceDoesNotExist) as caught:
        ws.jobs.get_run(987654321)
    assert isinstance(caught.value, NotFound)
    with pytest.raises(ResourceDoesNotExist):
        ws.jobs.get_run_output(987654321)


def test_wrong_token_is_permission_denied(emulator: BackgroundServer) -> None:
    with pytest.raises(PermissionDenied):
        WorkspaceClient(host=emulator.url, token="wrong").jobs.get_run(1)


def test_cancel_through_sdk(ws: WorkspaceClient) -> None:
    run_id = ws.jobs.submit(run_name="sleepy", tasks=[_task("/jobs/sleep", {"seconds": "30"})]).run_id
    deadline = time.monotonic() + 10
    while ws.jobs.get_run(run_id).state.life_cycle_state != jobs.RunLifeCycleState.RUNNING:  # type: ignore[union-attr]
        assert time.monotonic() < deadline
        time.sleep(0.02)
    started = time.monotonic()
    ws.jobs.cancel_run(run_id)
    run = _wait(ws, run_id)
    assert time.monotonic() - started < 5
    assert run.state is not None and run.state.result_state == jobs.RunResultState.CANCELED
    assert run.state.user_cancelled_or_timedout is True
    assert run.tasks and run.tasks[0].state and run.tasks[0].state.result_state == jobs.RunResultState.CANCELED


def test_list_runs(ws: WorkspaceClient, client: httpx.Client) -> None:
    run_id = submit(client, "/jobs/echo")
    wait_for(client, run_id)
    listed = list(ws.jobs.list_runs(completed_only=True, limit=2))
    assert any(run.run_id == run_id for run in listed)
    assert all(run.run_type == jobs.RunType.SUBMIT_RUN for run in listed)
    assert len(listed) >= 2  # paginated through next_page_token


def test_get_run_on_a_task_run_id(ws: WorkspaceClient, client: httpx.Client) -> None:
    run_id = submit(client, "/jobs/echo")
    run = wait_for(client, run_id)
    task_run = ws.jobs.get_run(run["tasks"][0]["run_id"])
    assert task_run.run_id == run["tasks"][0]["run_id"]
    assert task_run.state is not None and task_run.state.result_state == jobs.RunResultState.SUCCESS
    assert output(client, task_run.run_id)["notebook_output"]["result"]
