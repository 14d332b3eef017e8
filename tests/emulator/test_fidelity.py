"""Notebooks written the way real ones are (tests/emulator/fidelity/), run through the databricks-sdk.

MAGIC cells, `%run` with a quoted path, bare `except:` around dbutils calls, JSON in widgets, widget
names with spaces; `databricks.sdk.runtime` imported inside the notebook; secrets from the
emulator's secrets file, never shown in a log or an output; task values between the tasks of a run.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from databricks.sdk import WorkspaceClient
from databricks.sdk.service import jobs

from dsbridge_local.emulator.app import EmulatorConfig
from dsbridge_local.emulator.server import BackgroundServer, start_background
from tests.emulator.conftest import TOKEN, sdk_finished

FIDELITY = Path(__file__).resolve().parent / "fidelity"
SECRET = "tok-5f3a9c-very-secret"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BackgroundServer]:
    state = tmp_path_factory.mktemp("fidelity-state")
    secrets_file = state / "secrets.json"
    secrets_file.write_text(json.dumps({"payments": {"api_token": SECRET, "region": "eu"}, "other": {}}))
    config = EmulatorConfig(workspace=FIDELITY, state_dir=state, token=TOKEN, secrets_file=secrets_file)
    emulator = start_background(config)
    try:
        yield emulator
    finally:
        emulator.stop()


@pytest.fixture(scope="module")
def ws(server: BackgroundServer) -> WorkspaceClient:
    return WorkspaceClient(host=server.url, token=TOKEN)


def run_one(ws: WorkspaceClient, path: str, params: dict[str, str] | None = None) -> tuple[jobs.Run, jobs.RunOutput]:
    task = jobs.SubmitTask(task_key="t", notebook_task=jobs.NotebookTask(notebook_path=path, base_parameters=params))
    run = sdk_finished(ws, ws.jobs.submit(run_name=path, tasks=[task]).run_id)
    assert run.tasks
    return run, ws.jobs.get_run_output(run.tasks[0].run_id)


def log_of(server: BackgroundServer, run_id: int) -> str:
    answer = httpx.get(f"{server.url}/emulator/runs/{run_id}/log", headers={"Authorization": f"Bearer {TOKEN}"})
    answer.raise_for_status()
    return answer.text


def test_the_sdk_runtime_module_hands_out_the_notebooks_own_dbutils(ws, server):
    run, out = run_one(ws, "/runtime_module", {"answer": "42"})
    assert run.state.result_state == jobs.RunResultState.SUCCESS, out.error
    assert out.notebook_output.result == "42"  # exit(value=...) with the widget read through getArgument
    log = log_of(server, run.run_id)
    assert "dbutils.widgets provides utilities for working with notebook widgets." in log
    assert "{'shown': True}" in log and "<b>bold</b>" in log


def test_secrets_are_read_and_never_shown(ws, server):
    run, out = run_one(ws, "/uses_secrets")
    assert run.state.result_state == jobs.RunResultState.SUCCESS, out.error
    result = json.loads(out.notebook_output.result)
    assert result == {
        "missing": "refused",  # the bare except caught the missing key
        "scopes": ["other", "payments"],
        "keys": ["api_token", "region"],
        "echo": "[REDACTED]",
        "length": len(SECRET),
    }
    log = log_of(server, run.run_id)
    assert "the token is [REDACTED]" in log and SECRET not in log


def test_a_missing_secret_fails_the_run_as_on_databricks(ws):
    run, out = run_one(ws, "/secret_missing")
    assert run.state.result_state == jobs.RunResultState.FAILED
    assert out.error == "IllegalArgumentException: Secret does not exist with scope: payments and key: nope"


def test_task_values_pass_from_one_task_to_the_next(ws):
    tasks = [
        jobs.SubmitTask(task_key="produce", notebook_task=jobs.NotebookTask(notebook_path="/task_values_set")),
        jobs.SubmitTask(
            task_key="consume",
            depends_on=[jobs.TaskDependency(task_key="produce")],
            notebook_task=jobs.NotebookTask(notebook_path="/task_values_get"),
        ),
    ]
    run = sdk_finished(ws, ws.jobs.submit(run_name="task values", tasks=tasks).run_id)
    consume = next(t for t in run.tasks or [] if t.task_key == "consume")
    out = ws.jobs.get_run_output(consume.run_id)
    assert json.loads(out.notebook_output.result) == {"value": {"value": 0.42}, "fallback": "dflt"}


def test_real_world_widgets_and_quoted_run(ws):
    run, out = run_one(ws, "/widgets", {"merchant id": "m 7", "config": json.dumps({"limit": 21})})
    assert run.state.result_state == jobs.RunResultState.SUCCESS, out.error
    assert json.loads(out.notebook_output.result) == {"merchant": "m 7", "limit": 42, "optional": None}


def test_a_malformed_secrets_file_stops_the_emulator_at_start(tmp_path):
    from dsbridge_local.emulator.runtime.secrets import SecretsFileError

    bad = tmp_path / "secrets.json"
    bad.write_text(json.dumps({"scope": {"key": 7}}))
    with pytest.raises(SecretsFileError, match="must map scopes to keys to strings"):
        start_background(EmulatorConfig(workspace=FIDELITY, state_dir=tmp_path / "s", secrets_file=bad))


def test_notebook_run_takes_the_same_secrets_file_and_redacts(tmp_path, capsys):
    from dsbridge_local.cli.main import main

    secrets_file = tmp_path / "secrets.json"
    secrets_file.write_text(json.dumps({"payments": {"api_token": SECRET}}))
    notebook = str(FIDELITY / "uses_secrets.py")
    assert main(["notebook", "run", notebook, "--secrets", str(secrets_file), "--json"]) == 0
    printed = capsys.readouterr().out
    assert SECRET not in printed and "the token is [REDACTED]" in json.loads(printed)["log"]
    secrets_file.write_text("[not an object]")
    assert main(["notebook", "run", notebook, "--secrets", str(secrets_file)]) == 2
    assert "secrets file" in capsys.readouterr().err


def test_notebook_run_children_are_runs_with_databricks_semantics(ws, server):
    run, out = run_one(ws, "/orchestrator")
    assert run.state.result_state == jobs.RunResultState.SUCCESS, out.error
    result = json.loads(out.notebook_output.result)
    assert (result["doubled"], result["again"], result["silent"]) == ("42", "84", "")
    assert result["failure"]["type"] == "WorkflowException"
    assert result["failure"]["cause"] == "NotebookExecutionException"
    assert "KeyError: 'missing column amount'" in result["failure"]["message"]
    assert (
        result["timeout"]["type"] == "WorkflowException" and "Timed out after 1 seconds" in result["timeout"]["message"]
    )
    # Each child is its own run, shown by runs/get as a notebook workflow run.
    children = [r for r in ws.jobs.list_runs(limit=25) if (r.run_name or "").endswith("/children/child")]
    assert len(children) == 5
    assert {r.run_type for r in children} == {jobs.RunType.WORKFLOW_RUN}


def test_cancelling_the_parent_cancels_its_child(ws):
    task = jobs.SubmitTask(task_key="t", notebook_task=jobs.NotebookTask(notebook_path="/parent_waits"))
    parent_id = ws.jobs.submit(run_name="parent", tasks=[task]).run_id
    deadline = time.monotonic() + 30
    while not (
        child := next(
            (
                r
                for r in ws.jobs.list_runs(active_only=True, limit=25)
                if r.run_name == "dbutils.notebook.run /children/child"
            ),
            None,
        )
    ):
        assert time.monotonic() < deadline, "the child run never started"
        time.sleep(0.1)
    ws.jobs.cancel_run(parent_id)
    assert sdk_finished(ws, parent_id).state.result_state == jobs.RunResultState.CANCELED
    assert sdk_finished(ws, child.run_id).state.result_state == jobs.RunResultState.CANCELED


def test_notebook_run_works_under_dsbridge_notebook_run(capsys):
    from dsbridge_local.cli.main import main

    assert main(["notebook", "run", str(FIDELITY / "orchestrator.py"), "--workspace", str(FIDELITY), "--json"]) == 0
    result = json.loads(json.loads(capsys.readouterr().out)["result"])
    assert (result["doubled"], result["again"], result["failure"]["type"]) == ("42", "84", "WorkflowException")
    assert "Timed out after 1 seconds" in result["timeout"]["message"]


@pytest.mark.r
def test_r_notebooks_have_notebook_run_secrets_and_widgets_help(ws, server):
    run, out = run_one(ws, "/r_orchestrator")
    assert run.state.result_state == jobs.RunResultState.SUCCESS, out.error
    result = json.loads(out.notebook_output.result)
    assert result["doubled"] == "42" and result["n"] == len(SECRET)
    assert result["failure"].startswith(
        "WorkflowException: com.databricks.NotebookExecutionException: FAILED: KeyError"
    )
    assert result["missing"] == "IllegalArgumentException: Secret does not exist with scope: payments and key: nope"
    log = log_of(server, run.run_id)
    assert "the token is [REDACTED]" in log and SECRET not in log
    assert "dbutils.widgets provides utilities for working with notebook widgets." in log
