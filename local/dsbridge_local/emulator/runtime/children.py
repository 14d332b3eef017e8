"""`dbutils.notebook.run(path, timeout_seconds, arguments)`: a notebook running another as a run of its own.

Inside the emulator the child is submitted to the emulator's own Jobs API (a WORKFLOW_RUN that
`runs/get` shows, cancelled with its parent), with the arguments as its widgets, and followed until
it ends. Under `dsbridge notebook run` (no API) the child runs the same way `notebook run` runs a
notebook, in a process of its own. Either way the path is resolved as Databricks does -- relative
to the calling notebook (with or without `./`) or absolute in the workspace -- the exit value comes
back as a string (`""` without `dbutils.notebook.exit`), and a child that fails or runs past
`timeout_seconds` (0: no limit) raises `WorkflowException` in the caller, its cause the child's
error, so `except` clauses written for a workspace behave the same.
"""

from __future__ import annotations

import json
import os
import posixpath
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

POLL_SECONDS = 0.2
GRACE_SECONDS = 120
UNBOUNDED_CHILD_SECONDS = 7 * 24 * 3600
TERMINAL = ("TERMINATED", "INTERNAL_ERROR", "SKIPPED")
PARENT_RUN_HEADER = "X-Dsbridge-Parent-Run"


class NotebookExecutionException(Exception):
    """The child notebook's failure: the cause of the `WorkflowException` the caller sees."""


class WorkflowException(Exception):
    """Raised by `dbutils.notebook.run` when the child notebook fails or times out."""


def failed(message: str) -> WorkflowException:
    cause = NotebookExecutionException(f"FAILED: {message}")
    error = WorkflowException(f"com.databricks.NotebookExecutionException: FAILED: {message}")
    error.__cause__ = cause
    return error


def resolve(path: str, caller: str) -> str:
    """The workspace path of `path` as called from the notebook at workspace path `caller`."""
    if not isinstance(path, str) or not path.strip():
        raise ValueError("dbutils.notebook.run needs the path of a notebook")
    if path.startswith("/"):
        return posixpath.normpath(path)
    return posixpath.normpath(posixpath.join(posixpath.dirname(caller or "/"), path))


def run(path: str, timeout_seconds: int = 0, arguments: dict[str, Any] | None = None) -> str:
    if not isinstance(timeout_seconds, int | float) or timeout_seconds < 0:
        raise ValueError(f"timeout_seconds must be a number >= 0, got {timeout_seconds!r}")
    target = resolve(path, os.environ.get("DSBRIDGE_NOTEBOOK_PATH", "/"))
    params = {str(key): str(value) for key, value in (arguments or {}).items()}
    if os.environ.get("DSBRIDGE_EMULATOR_API"):
        return _as_run(target, int(timeout_seconds), params)
    return _as_process(target, float(timeout_seconds), params)


def _call(method: str, endpoint: str, body: dict[str, Any] | None = None, query: str = "") -> dict[str, Any]:
    api = os.environ["DSBRIDGE_EMULATOR_API"].rstrip("/")
    headers = {"Content-Type": "application/json"}
    if parent := os.environ.get("DSBRIDGE_RUN_ID"):
        headers[PARENT_RUN_HEADER] = parent
    if token := os.environ.get("DSBRIDGE_EMULATOR_TOKEN"):
        headers["Authorization"] = f"Bearer {token}"
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(f"{api}/api/{endpoint}{query}", data=data, headers=headers, method=method)
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            return dict(json.loads(answer.read() or b"{}"))
    except urllib.error.HTTPError as exc:
        detail = json.loads(exc.read() or b"{}").get("message", str(exc))
        error = failed(detail)
        raise error from error.__cause__
    except urllib.error.URLError as exc:
        error = failed(f"the Databricks emulator did not answer ({exc.reason})")
        raise error from error.__cause__


def _as_run(target: str, timeout: int, params: dict[str, str]) -> str:
    body: dict[str, Any] = {
        "run_name": f"dbutils.notebook.run {target}",
        "tasks": [{"task_key": "notebook", "notebook_task": {"notebook_path": target, "base_parameters": params}}],
    }
    if timeout:
        body["timeout_seconds"] = timeout
    run_id = _call("POST", "2.2/jobs/runs/submit", body)["run_id"]
    # The emulator ends the child by its timeout, or with this notebook; this bound is a last resort.
    deadline = time.monotonic() + (timeout + GRACE_SECONDS if timeout else UNBOUNDED_CHILD_SECONDS)
    while True:
        run = _call("GET", "2.2/jobs/runs/get", query=f"?run_id={run_id}")
        if run["state"]["life_cycle_state"] in TERMINAL:
            break
        if time.monotonic() > deadline:
            _call("POST", "2.2/jobs/runs/cancel", {"run_id": run_id})
            raise failed(f"run {run_id} did not end in time; it was cancelled")
        time.sleep(POLL_SECONDS)
    result = run["state"].get("result_state")
    if result == "TIMEDOUT":
        raise failed(f"Timed out after {timeout} seconds (run {run_id})")
    task_run = run["tasks"][0]["run_id"]
    output = _call("GET", "2.2/jobs/runs/get-output", query=f"?run_id={task_run}")
    if result != "SUCCESS":
        raise failed(output.get("error") or run["state"].get("state_message") or f"run {run_id} ended {result}")
    return str((output.get("notebook_output") or {}).get("result") or "")


def _as_process(target: str, timeout: float, params: dict[str, str]) -> str:
    """Under `dsbridge notebook run`: the child as `notebook run` runs one, in the same workspace folder."""
    from dsbridge_local.emulator.runtime.source import NotebookNotFound, NotebookPathError, resolve_notebook

    root = Path(os.environ.get("DSBRIDGE_WORKSPACE_DIR") or Path.cwd())
    try:
        notebook, _language = resolve_notebook(root, target)
    except (NotebookNotFound, NotebookPathError) as exc:
        error = failed(str(exc))
        raise error from error.__cause__
    argv = [sys.executable, "-m", "dsbridge_local.cli.main", "notebook", "run", str(notebook), "--json"]
    argv += ["--workspace", str(root), *(f"--param={key}={value}" for key, value in params.items())]
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout or None, check=False)
    except subprocess.TimeoutExpired:
        error = failed(f"Timed out after {timeout:g} seconds")
        raise error from error.__cause__
    try:
        outcome = json.loads(done.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        error = failed(f"the child notebook {target} could not be run: {done.stderr.strip()[-500:]}")
        raise error from error.__cause__
    print(outcome.get("log", ""), end="")
    if outcome.get("status") != "SUCCESS":
        raise failed(str(outcome.get("error")))
    return str(outcome.get("result") or "")


def main(argv: list[str]) -> int:
    """`python -m ...children PATH TIMEOUT ARGUMENTS_JSON`, for R notebooks: one JSON line, the exit
    value (`{"result": ...}`) or the failure (`{"error": ...}`)."""
    path, timeout, arguments = argv[0], float(argv[1]), json.loads(argv[2] or "{}")
    try:
        value = run(path, int(timeout), arguments)
    except WorkflowException as exc:
        print(json.dumps({"error": str(exc)}))
        return 0
    print(json.dumps({"result": value}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
