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
from dsbridge.stack.stack import StackConfig, down, up

REPO = Path(__file__).resolve().parents[2]
PG_ADMIN_DSN = os.environ.get("DSBRIDGE_E2E_PG_ADMIN", "host=127.0.0.1 port=5432 user=postgres dbname=postgres")
E2E_DATABASE = "dsbridge_e2e"
E2E_BASE_PORT = int(os.environ.get("DSBRIDGE_E2E_BASE_PORT", "31080"))


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
    )


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


@pytest.fixture
def request_id() -> str:
    return f"e2e-{uuid.uuid4().hex[:12]}"


def events_for(stack: dict[str, Any], request_id: str) -> list[dict[str, Any]]:
    events = httpx.get(stack["service"]["events_url"], timeout=10).json()
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
