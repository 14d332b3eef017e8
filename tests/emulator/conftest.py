"""Fixtures for the emulator's tests: a workspace of tiny notebooks and emulators to drive.

Servers run in a background thread on a free loopback port (or, where a test must kill one hard,
as a subprocess whose PID is recorded and cleaned up). Every wait is bounded in time.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from dsbridge_local.emulator.app import EmulatorConfig
from dsbridge_local.emulator.server import BackgroundServer, start_background
from dsbridge_local.ports import free_port

TOKEN = "dapi-emulator-test-token"
REPO = Path(__file__).resolve().parents[2]
HEADER = "# Databricks notebook source\n"
SEP = "\n# COMMAND ----------\n\n"

NOTEBOOKS: dict[str, str] = {
    "jobs/echo.py": HEADER
    + SEP.join(
        [
            "# MAGIC %md\n# MAGIC # Echo\n# MAGIC Returns its parameters.\n",
            'dbutils.widgets.text("greeting", "hello")\ndbutils.widgets.text("name", "world")\n',
            "import json\n"
            "print('running echo')\n"
            'dbutils.notebook.exit(json.dumps({"greeting": dbutils.widgets.get("greeting"), '
            '"name": dbutils.widgets.get("name"), "request_id": dbutils.widgets.getArgument("request_id")}))\n',
        ]
    ),
    "jobs/fail.py": HEADER
    + SEP.join(
        [
            "print('about to fail')\n",
            "def check(value):\n    raise ValueError(f'bad threshold {value}')\n\ncheck(42)\n",
        ]
    ),
    "jobs/sleep.py": HEADER
    + "import time\nprint('sleeping', flush=True)\ntime.sleep(float(dbutils.widgets.get('seconds')))\n"
    + 'dbutils.notebook.exit("woke up")\n',
    "jobs/stubborn.py": HEADER
    + "import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\nprint('ignoring SIGTERM', flush=True)\n"
    + "time.sleep(60)\n",
    "jobs/big.py": HEADER + "dbutils.notebook.exit('x' * (5 * 1024 * 1024 + 10))\n",
    "jobs/uses_lib.py": HEADER
    + SEP.join(
        [
            "# MAGIC %run ./lib/helpers\n",
            "# MAGIC %pip install nothing-at-all\n",
            "dbutils.notebook.exit(str(double(21)))\n",
        ]
    ),
    "jobs/lib/helpers.py": HEADER + "def double(x):\n    return 2 * x\n",
    "jobs/no_widget.py": HEADER + "dbutils.widgets.get('missing')\n",
    "jobs/plain.py": "print('a plain python file')\n",
    "jobs/fs_local.py": HEADER
    + "p = dbutils.widgets.get('path')\ndbutils.fs.put(p, 'hi there', overwrite=True)\n"
    + "dbutils.notebook.exit(dbutils.fs.head(p))\n",
    "jobs/spark.py": HEADER + "spark.range(3)\n",
    "jobs/report.r": HEADER
    + SEP.join(
        [
            "# MAGIC %md\n# MAGIC R report\n",
            'dbutils.widgets.text("n", "2")\nn <- as.integer(dbutils.widgets.get("n"))\n',
            'cat("n is", n, "\\n")\ndbutils.notebook.exit(jsonlite::toJSON(list(square = n * n), auto_unbox = TRUE))\n',
        ]
    ),
    "jobs/fail.r": HEADER + 'cat("before\\n")\nstop("R went wrong")\n',
}


def write_workspace(root: Path) -> Path:
    for rel, text in NOTEBOOKS.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text), encoding="utf-8")
    (root.parent / "secret.py").write_text(HEADER + "dbutils.notebook.exit('escaped')\n", encoding="utf-8")
    (root / "jobs" / "link_out.py").symlink_to(root.parent / "secret.py")
    return root


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_workspace(tmp_path_factory.mktemp("ws") / "workspace")


@pytest.fixture(scope="module")
def emulator(workspace: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[BackgroundServer]:
    config = EmulatorConfig(
        workspace=workspace,
        state_dir=tmp_path_factory.mktemp("state"),
        token=TOKEN,
        max_concurrent_runs=4,
        kill_grace_s=1.0,
    )
    server = start_background(config)
    yield server
    server.stop()


@pytest.fixture
def client(emulator: BackgroundServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=emulator.url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30) as http:
        yield http


def submit(http: httpx.Client, path: str, params: dict[str, Any] | None = None, **extra: Any) -> int:
    body = {
        "run_name": extra.pop("run_name", "test"),
        "tasks": [{"task_key": "main", "notebook_task": {"notebook_path": path, "base_parameters": params or {}}}],
        **extra,
    }
    response = http.post("/api/2.2/jobs/runs/submit", json=body)
    assert response.status_code == 200, response.text
    return int(response.json()["run_id"])


def wait_for(
    http: httpx.Client, run_id: int, done: Callable[[dict[str, Any]], bool] | None = None, timeout: float = 20
) -> dict[str, Any]:
    """Poll runs/get every 20 ms until `done(run)` (default: terminal), at most `timeout` seconds."""

    def terminal(run: dict[str, Any]) -> bool:
        return run["state"]["life_cycle_state"] in ("TERMINATED", "INTERNAL_ERROR", "SKIPPED")

    check = done or terminal
    deadline = time.monotonic() + timeout
    while True:
        response = http.get("/api/2.2/jobs/runs/get", params={"run_id": run_id})
        assert response.status_code == 200, response.text
        run = response.json()
        if check(run):
            return run
        if time.monotonic() > deadline:
            raise AssertionError(f"run {run_id} did not get there in {timeout}s: {run['state']}")
        time.sleep(0.02)


def sdk_finished(ws: Any, run_id: int, timeout: float = 60, poll: float = 0.05) -> Any:
    """`wait_for` through the databricks-sdk: the run once it is TERMINATED or INTERNAL_ERROR, at
    most `timeout` seconds."""
    from databricks.sdk.service import jobs

    ended = (jobs.RunLifeCycleState.TERMINATED, jobs.RunLifeCycleState.INTERNAL_ERROR)
    deadline = time.monotonic() + timeout
    while True:
        run = ws.jobs.get_run(run_id)
        assert run.state is not None
        if run.state.life_cycle_state in ended:
            return run
        assert time.monotonic() < deadline, f"run {run_id} did not end in {timeout}s: {run.state}"
        time.sleep(poll)


def output(http: httpx.Client, run_id: int) -> dict[str, Any]:
    response = http.get("/api/2.2/jobs/runs/get-output", params={"run_id": run_id})
    assert response.status_code == 200, response.text
    return dict(response.json())


class EmulatorProcess:
    """`dsbridge emulator` as a subprocess (own process group), for tests that kill it hard."""

    def __init__(self, workspace: Path, state: Path, extra: list[str] | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "plugins"), str(REPO / "local")])}
        argv = [
            sys.executable,
            "-m",
            "dsbridge_local.emulator",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--workspace",
            str(workspace),
            "--state",
            str(state),
            "--token",
            TOKEN,
            "--log-level",
            "warning",
            *(extra or []),
        ]
        self.proc = subprocess.Popen(argv, env=env, start_new_session=True, stdout=subprocess.DEVNULL)
        deadline = time.monotonic() + 20
        while True:
            try:
                if httpx.get(f"{self.url}/health", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.kill()
                raise RuntimeError("emulator subprocess did not start")
            time.sleep(0.05)

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30)

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)

    def terminate(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.kill()


def hook_connection(port: int, token: str = TOKEN) -> str:
    """The Airflow connection (as the JSON env-var form) for an emulator on loopback over plain http."""
    return json.dumps(
        {"conn_type": "databricks", "host": "127.0.0.1", "port": port, "schema": "http", "password": token}
    )
