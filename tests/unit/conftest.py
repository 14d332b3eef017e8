"""Shared fakes for operator unit tests: a task context without a running Airflow."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any
from unittest import mock

import pytest
from airflow.sdk.api.datamodels._generated import DagRunState

from dsbridge.contract import JobContract, load_contract

REPO = Path(__file__).resolve().parents[2]


class FakeTaskStateStore:
    def __init__(self) -> None:
        self.values: dict[str, Any] = {}

    def get(self, key: str) -> Any:
        return self.values.get(key)

    def set(self, key: str, value: Any) -> None:
        self.values[key] = value


class FakeTI:
    """Records pushes; answers pulls from a {(task_id, key): value} table."""

    def __init__(self, task_id: str, pulls: dict[tuple[str, str], Any] | None = None) -> None:
        self.task_id = task_id
        self.dag_id = "merchant_threshold"
        self.try_number = 1
        self.stats_tags: dict[str, str] = {}
        self.dagrun_states: dict[tuple[str, str], str] = {}
        self.pulls = dict(pulls or {})
        self.pushed: dict[str, Any] = {}

    def get_dagrun_state(self, dag_id: str, run_id: str) -> DagRunState:
        """As the Task SDK answers: the enum, not its string."""
        return DagRunState(self.dagrun_states.get((dag_id, run_id), "running"))

    def xcom_push(self, key: str, value: Any) -> None:
        self.pushed[key] = value

    def xcom_pull(self, task_ids: str, key: str = "return_value", **run: Any) -> Any:
        """Pulls from another DAG run (`dag_id=`, `run_id=`) are looked up under those too."""
        if run:
            return self.pulls.get((run.get("dag_id"), run.get("run_id"), task_ids, key))
        return self.pulls.get((task_ids, key))


@pytest.fixture
def contract() -> JobContract:
    return load_contract(REPO / "notebooks" / "merchant_threshold" / "job.yaml")


def make_context(
    task_id: str,
    *,
    run_id: str = "req-42",
    conf: dict[str, Any] | None = None,
    params: dict[str, Any] | None = None,
    pulls: dict[tuple[str, str], Any] | None = None,
    clear_number: int = 0,
) -> dict[str, Any]:
    dag_run = SimpleNamespace(
        dag_id="merchant_threshold",
        run_id=run_id,
        conf=conf or {},
        clear_number=clear_number,
        start_date=None,
    )
    return {
        "ti": FakeTI(task_id, pulls),
        "dag_run": dag_run,
        "params": params or {},
        "task_state_store": FakeTaskStateStore(),
        "run_id": run_id,
    }


@pytest.fixture
def context_factory():
    return make_context


@pytest.fixture
def no_settings_env(monkeypatch):
    for name in ("DSBRIDGE_RESULTS_BUCKET", "DSBRIDGE_RESULTS_PREFIX", "DSBRIDGE_WORKSPACE_ROOT"):
        monkeypatch.delenv(name, raising=False)
    return mock
