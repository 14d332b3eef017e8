"""The baseline DAG (benchmarks/dags): the usual wiring, and callbacks the reference receiver accepts."""

from __future__ import annotations

import importlib.util
import json
from types import ModuleType, SimpleNamespace
from typing import Any
from unittest import mock

import pytest
from airflow.providers.databricks.operators.databricks import DatabricksSubmitRunOperator
from airflow.providers.http.operators.http import HttpOperator

from dsbridge.callback.signing import new_secret
from dsbridge.client import CallbackReceiver
from dsbridge_local.bench.stack import BASELINE_DAG, BASELINE_DAGS


@pytest.fixture(scope="module")
def baseline() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_sleep_baseline", BASELINE_DAGS / "bench_sleep_baseline.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_provider_operator_keeps_its_defaults(baseline: ModuleType) -> None:
    dag = baseline.dag
    assert dag.dag_id == BASELINE_DAG
    assert "dsbridge" not in dag.tags  # dsbridge's outcome listener and reconciler leave it alone
    run = dag.get_task("run_notebook")
    assert type(run) is DatabricksSubmitRunOperator
    assert run.polling_period_seconds == 30
    assert run.deferrable is False and run.wait_for_termination is True
    assert run.tasks[0]["notebook_task"]["notebook_path"] == "/bench_sleep/bench_sleep"
    assert isinstance(dag.get_task("notify_success"), HttpOperator)
    assert dag.get_task("notify_failure").trigger_rule == "one_failed"


@pytest.mark.parametrize("task_id", ["notify_success", "notify_failure"])
def test_its_callback_is_a_signed_v2_event_the_receiver_accepts(baseline: ModuleType, task_id: str) -> None:
    secret = new_secret()
    task = baseline.dag.get_task(task_id)
    xcoms = {"run_id": 1234, "run_page_url": "http://127.0.0.1/?o=1#job/1234/run/1234"}
    ti = SimpleNamespace(xcom_pull=lambda task_ids, key: xcoms[key])
    sent: dict[str, Any] = {}

    def fake_send(self: HttpOperator, context: Any) -> str:
        sent.update(data=self.data, headers=dict(self.headers), endpoint=self.endpoint, conn=self.http_conn_id)
        return "ok"

    connection = SimpleNamespace(extra_dejson={"signing_secret": secret})
    with (
        mock.patch.object(baseline.BaseHook, "get_connection", return_value=connection),
        mock.patch.object(HttpOperator, "execute", fake_send),
    ):
        assert task.execute({"run_id": "req-7", "ti": ti}) == "ok"
    assert (sent["endpoint"], sent["conn"]) == ("/callbacks/dsbridge", "optimization_service")
    event = CallbackReceiver(secret).verify(sent["headers"], sent["data"].encode())
    assert (event.job, event.request_id, event.databricks_run_id) == (BASELINE_DAG, "req-7", 1234)
    expected = "request.succeeded" if task_id == "notify_success" else "request.failed"
    assert json.loads(sent["data"])["type"] == expected == event.type
