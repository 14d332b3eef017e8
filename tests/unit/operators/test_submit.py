"""The exact runs/submit payload, and the failures caught before anything is submitted."""

from __future__ import annotations

import json
from unittest import mock

import pytest
from airflow.sdk.exceptions import AirflowFailException

from dsbridge.operators.submit import NotebookSubmitRunOperator, idempotency_token

HOOK = "airflow.providers.databricks.operators.databricks.DatabricksHook"
PARAMS = {
    "request_id": None,
    "merchant_id": "m_1042",
    "target_chargeback_rate": 0.02,
    "lookback_days": 30,
    "orders_path": None,
}


@pytest.fixture
def operator(contract):
    return NotebookSubmitRunOperator(task_id="submit", contract=contract)


def test_exact_submit_payload(operator, context_factory, monkeypatch):
    monkeypatch.setenv("DSBRIDGE_RESULTS_BUCKET", "results")
    monkeypatch.setenv("DSBRIDGE_RESULTS_PREFIX", "runs")
    monkeypatch.setenv("DSBRIDGE_WORKSPACE_ROOT", "/Repos/ds")
    context = context_factory("submit", conf={"merchant_id": "m_1042", "target_chargeback_rate": 0.02}, params=PARAMS)
    with mock.patch(HOOK) as hook_cls:
        hook = hook_cls.return_value
        hook.submit_run.return_value = 77
        hook.get_run_page_url.return_value = "http://db/run/77"
        operator.execute(context)

    hook.submit_run.assert_called_once()
    payload = hook.submit_run.call_args.args[0]
    output_path = "s3://results/runs/merchant_threshold/req-42/"
    assert payload == {
        "run_name": "dsbridge merchant_threshold req-42",
        "timeout_seconds": "1200",
        "idempotency_token": idempotency_token("merchant_threshold", "req-42", 0),
        "tasks": [
            {
                "task_key": "merchant_threshold",
                "notebook_task": {
                    "notebook_path": "/Repos/ds/merchant_threshold/merchant_threshold",
                    "source": "WORKSPACE",
                    "base_parameters": {
                        "merchant_id": "m_1042",
                        "target_chargeback_rate": "0.02",
                        "lookback_days": "30",
                        "orders_path": "",
                        "job": "merchant_threshold",
                        "request_id": "req-42",
                        "output_path": output_path,
                        "params_json": json.dumps(
                            {
                                "lookback_days": 30,
                                "merchant_id": "m_1042",
                                "orders_path": None,
                                "target_chargeback_rate": 0.02,
                            },
                            sort_keys=True,
                        ),
                    },
                },
                "new_cluster": {
                    "spark_version": "15.4.x-scala2.12",
                    "node_type_id": "i3.xlarge",
                    "num_workers": "1",
                },
            }
        ],
    }
    ti = context["ti"]
    assert ti.pushed["run_id"] == 77
    assert ti.pushed["request"] == {"request_id": "req-42", "output_path": output_path, "attempt": 0}
    # The provider's durable mode remembers the run for a restarted worker.
    assert context["task_state_store"].values == {"databricks_run_id": 77}


def test_token_is_stable_per_request_and_changes_per_clear():
    token = idempotency_token("job", "req-1")
    assert token == idempotency_token("job", "req-1")
    assert token != idempotency_token("job", "req-2")
    assert token != idempotency_token("other", "req-1")
    assert token != idempotency_token("job", "req-1", attempt=1)
    assert len(token) <= 64


def test_retry_after_worker_death_reconnects_instead_of_resubmitting(operator, context_factory):
    context = context_factory("submit", conf={"merchant_id": "m_1"}, params=PARAMS)
    context["task_state_store"].set("databricks_run_id", 77)
    with mock.patch(HOOK) as hook_cls:
        hook = hook_cls.return_value
        hook.get_run.return_value = {"state": {"life_cycle_state": "RUNNING"}}
        operator.execute(context)
    hook.submit_run.assert_not_called()


def test_unsafe_run_id_becomes_a_safe_unique_request_id(operator, context_factory):
    context = context_factory("submit", run_id="manual__2026-11-29T10:00:00+00:00", params=PARAMS)
    with mock.patch(HOOK) as hook_cls:
        hook_cls.return_value.submit_run.return_value = 5
        operator.execute(context)
    request_id = context["ti"].pushed["request"]["request_id"]
    assert request_id.startswith("manual__2026-11-29T10_00_00_00_00-")
    assert "/" not in request_id and ":" not in request_id


def test_unknown_conf_fields_fail_before_submit(operator, context_factory):
    context = context_factory("submit", conf={"merchant_id": "m", "evil": "{{ 7*7 }}"}, params=PARAMS)
    with (
        mock.patch(HOOK) as hook_cls,
        pytest.raises(AirflowFailException, match=r"unknown parameter\(s\) \['evil'\]"),
    ):
        operator.execute(context)
    hook_cls.return_value.submit_run.assert_not_called()
    assert context["ti"].pushed["dsbridge_error"]["failed_task"] == "submit"


def test_oversized_parameters_fail_before_submit(operator, context_factory):
    params = dict(PARAMS, merchant_id="m", orders_path="s3://b/" + "x" * 1_100_000)
    context = context_factory("submit", params=params)
    with mock.patch(HOOK) as hook_cls, pytest.raises(AirflowFailException, match="at most 1 MB"):
        operator.execute(context)
    hook_cls.return_value.submit_run.assert_not_called()


def test_submit_error_is_recorded_and_retryable(operator, context_factory):
    context = context_factory("submit", params=PARAMS)
    with mock.patch(HOOK) as hook_cls, pytest.raises(RuntimeError, match="could not submit"):
        hook_cls.return_value.submit_run.side_effect = ConnectionError("refused")
        operator.execute(context)
    assert "refused" in context["ti"].pushed["dsbridge_error"]["message"]
