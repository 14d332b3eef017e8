"""The real local stack for end-to-end tests: Airflow on PostgreSQL, the emulator, S3, the service.

One stack serves the whole session. Its jobs folder holds the shipped jobs plus the test jobs in
tests/e2e/jobs, and it uses its own ports, state folder and database, so a developer's running
demo stack is left alone.
"""

from __future__ import annotations

import os
import shutil
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg2
import pytest

from dsbridge.client import AirflowClient
from dsbridge_local.stack.stack import StackConfig, down, up

REPO = Path(__file__).resolve().parents[2]
PG_ADMIN_DSN = os.environ.get("DSBRIDGE_E2E_PG_ADMIN", "host=127.0.0.1 port=5432 user=postgres dbname=postgres")
# `make test` runs the suite on the LocalExecutor, then tests/e2e/test_requests.py and test_celery.py
# again on the CeleryExecutor with two workers (DSBRIDGE_E2E_EXECUTOR=celery), each on its own stack.
E2E_EXECUTOR = os.environ.get("DSBRIDGE_E2E_EXECUTOR", "local")
CELERY = E2E_EXECUTOR == "celery"
E2E_WORKERS = 2
# Both can be moved, so that two suites (or a developer's stack) can run side by side.
E2E_DATABASE = os.environ.get("DSBRIDGE_E2E_DATABASE", "dsbridge_e2e_celery" if CELERY else "dsbridge_e2e")
E2E_BASE_PORT = int(os.environ.get("DSBRIDGE_E2E_BASE_PORT", "32080" if CELERY else "31080"))
# Horizons and retry delays short enough for tests; the outages the suite injects stay inside them.
E2E_SETTINGS = {
    "DSBRIDGE_RETRY_MAX_DELAY_MINUTES": "0.25",
    "DSBRIDGE_DATABRICKS_HORIZON_MINUTES": "10",
    "DSBRIDGE_COLLECT_HORIZON_MINUTES": "10",
    "DSBRIDGE_CALLBACK_HORIZON_MINUTES": "20",
    "DSBRIDGE_RECONCILE_SECONDS": "10",
}


def _admin(sql: str) -> None:
    conn = psycopg2.connect(PG_ADMIN_DSN)
    conn.autocommit = True
    try:
        with conn.cursor() as cursor:
            cursor.execute(sql)
    finally:
        conn.close()


@pytest.fixture(scope="session")
def stack_config(tmp_path_factory: pytest.TempPathFactory) -> StackConfig:
    root = tmp_path_factory.mktemp("e2e-stack")
    notebooks = root / "notebooks"
    shutil.copytree(REPO / "notebooks", notebooks)
    for job in (REPO / "tests" / "e2e" / "jobs").iterdir():
        shutil.copytree(job, notebooks / job.name)
    _admin(f"DROP DATABASE IF EXISTS {E2E_DATABASE} WITH (FORCE)")
    _admin(f"CREATE DATABASE {E2E_DATABASE}")
    return StackConfig(
        state_dir=root / "state",
        base_port=E2E_BASE_PORT,
        database_url=f"postgresql+psycopg2://postgres@127.0.0.1:5432/{E2E_DATABASE}",
        notebooks=notebooks,
        settings_env=E2E_SETTINGS,
        executor=E2E_EXECUTOR,
        workers=E2E_WORKERS,
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Celery-only scenarios need the Celery stack; on the LocalExecutor pass they are left to it."""
    if CELERY:
        return
    later = pytest.mark.skip(reason="runs in the Celery pass (DSBRIDGE_E2E_EXECUTOR=celery; `make test` runs it)")
    for item in items:
        if "celery" in item.keywords:
            item.add_marker(later)


@pytest.fixture(scope="session")
def stack(stack_config: StackConfig) -> Iterator[dict[str, Any]]:
    try:
        yield up(stack_config)
    finally:
        down(stack_config)
        _admin(f"DROP DATABASE IF EXISTS {E2E_DATABASE} WITH (FORCE)")


@pytest.fixture(scope="session")
def airflow(stack: dict[str, Any]) -> Iterator[AirflowClient]:
    info = stack["airflow"]
    with AirflowClient(info["url"], info["username"], info["password"]) as client:
        yield client


@pytest.fixture(scope="session")
def admin(stack: dict[str, Any]) -> Iterator[AirflowClient]:
    """Ops in the Airflow UI: clear, pause, mark runs (the same REST calls the UI makes)."""
    info = stack["airflow_admin"]
    with AirflowClient(stack["airflow"]["url"], info["username"], info["password"]) as client:
        yield client


@pytest.fixture
def request_id() -> str:
    return f"e2e-{uuid.uuid4().hex[:12]}"


def events_for(stack: dict[str, Any], request_id: str) -> list[dict[str, Any]]:
    service = stack["service"]
    answer = httpx.get(service["events_url"], headers={"Authorization": f"Bearer {service['admin_token']}"}, timeout=10)
    answer.raise_for_status()
    events = answer.json()
    return [e for e in events if (e.get("payload") or {}).get("request_id") == request_id]


def wait_for_events(stack: dict[str, Any], request_id: str, timeout: float = 30.0) -> list[dict[str, Any]]:
    """Events for the request once one arrived; then a short settle time to catch duplicates."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = events_for(stack, request_id)
        if found:
            time.sleep(2.0)
            return events_for(stack, request_id)
        time.sleep(0.5)
    return []


def databricks_runs(stack: dict[str, Any], request_id: str) -> list[dict[str, Any]]:
    """Runs the emulator has for this request (dsbridge names each run after job and request)."""
    emulator = stack["emulator"]
    answer = httpx.get(
        f"{emulator['url']}/api/2.2/jobs/runs/list",
        params={"limit": 25},
        headers={"Authorization": f"Bearer {emulator['token']}"},
        timeout=10,
    )
    answer.raise_for_status()
    return [r for r in answer.json().get("runs", []) if r.get("run_name", "").endswith(f" {request_id}")]


# --- docs/reliability.md: the fault scenarios' measured results, written by the suite -------------

RELIABILITY_DOC = REPO / "docs" / "reliability.md"
_RELIABILITY_ROWS: dict[str, dict[str, Any]] = {}
RELIABILITY_PREAMBLE = """# Reliability

Generated by `tests/e2e/test_faults.py` (pytest marker `faults`, part of `make test`) from its last
run; do not edit by hand.

## What dsbridge promises

- One request, one story. A request is (job, request id) and its parameters. Each attempt at it
  (the first run, then each clear by ops) ends in exactly one final, signed event
  (`request.succeeded`, `request.failed` or `request.cancelled`); later attempts have a higher
  `sequence` and name the event they `supersede`; every delivery of an event carries the same id
  and the same bytes. A reuse of the request id with other parameters is refused with an event of
  its own (`sequence` 0) and touches nothing of the first request.
- At most one Databricks run of a request is live at any time: the submit carries an idempotency
  token derived from job, request and attempt; a new attempt adopts a live run of an earlier one
  (found by run name, so a run whose submit answer was lost is found too).
- Outages are ridden out for a horizon, not seconds, with per-request jitter: Databricks 30 minutes
  (`DSBRIDGE_DATABRICKS_HORIZON_MINUTES`, while submitting and waiting), S3 and Databricks while
  collecting 30 minutes (`DSBRIDGE_COLLECT_HORIZON_MINUTES`), the callback receiver 6 hours
  (`DSBRIDGE_CALLBACK_HORIZON_MINUTES`). When the wait's horizon runs out the run is cancelled
  before the failure event is sent. A triggerer crash or restart never cancels the notebook.
- No request without a final event: a run stopped from outside (caller cancel, DAG-run timeout,
  marked failed or successful by hand, a delivery cut short) gets its event from the
  `dsbridge_outcomes` DAG, started by the outcome listener as the run ends, and by the reconciler
  (every `DSBRIDGE_RECONCILE_SECONDS`, 60 by default) for any run the listener missed; a paused
  `dsbridge_outcomes` is unpaused with an alert. The DAG-run timeout is the sum of every step's
  worst case within its horizon, so it can never overtake a pending event.

This suite runs with shorter horizons (Databricks and collect 10 minutes, callbacks 20 minutes,
retry delays capped at 15 s, reconciler every 10 s; `E2E_SETTINGS` in `tests/e2e/conftest.py`), so
the outages it injects stay inside them and the suite stays fast.

## What it does not promise

- Delivery after the callback horizon: the task fails and alerts; clearing `notify_*` starts a new
  attempt whose event supersedes the undelivered one.
- Results of a Databricks run lost with its workspace (here: the emulator killed): the request fails.
- Cancelling a notebook while Databricks itself is unreachable: the failure event then says the
  run could not be cancelled.

## Scenarios (last run)

| scenario | promise | run state | events (by id) | deliveries | Databricks runs | result |
|---|---|---|---|---|---|---|
"""


@pytest.fixture
def reliability(request: pytest.FixtureRequest):
    """Record a fault scenario's observed outcome for docs/reliability.md."""
    began = time.monotonic()

    def record(scenario: str, promise: str, observed: dict[str, Any]) -> None:
        _RELIABILITY_ROWS[request.node.nodeid] = {
            "scenario": scenario,
            "promise": promise,
            "observed": observed,
            "seconds": time.monotonic() - began,
        }

    return record


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):
    report = (yield).get_result()
    if report.when == "call" and item.nodeid in _RELIABILITY_ROWS:
        _RELIABILITY_ROWS[item.nodeid]["passed"] = report.passed


def _scenario_count() -> int:
    """How many fault scenarios exist: a run of only some of them must not rewrite the doc."""
    import inspect

    from tests.e2e import test_faults

    return sum(
        1
        for name, test in vars(test_faults).items()
        if name.startswith("test_") and "reliability" in inspect.signature(test).parameters
    )


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if not _RELIABILITY_ROWS:
        return
    ran, scenarios = len(_RELIABILITY_ROWS), _scenario_count()
    if ran != scenarios:
        print(f"\n{ran} of {scenarios} fault scenarios ran; {RELIABILITY_DOC} left as it was")
        return
    lines = []
    for row in _RELIABILITY_ROWS.values():
        seen = row["observed"]
        types = ", ".join(seen["types"]) or "none"
        verdict = "pass" if row.get("passed") else "FAIL"
        lines.append(
            f"| {row['scenario']} | {row['promise']} | {seen['state']} | {seen['events']} ({types}) | "
            f"{seen['deliveries']} | {seen['databricks_runs']} | {verdict} ({row['seconds']:.0f} s) |"
        )
    stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    RELIABILITY_DOC.write_text(RELIABILITY_PREAMBLE + "\n".join(lines) + f"\n\nLast run: {stamp}.\n")
