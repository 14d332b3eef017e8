"""The callback: the right event for each outcome, signed, identical on every retry."""

from __future__ import annotations

import json
from pathlib import Path
from unittest import mock

import pytest
from airflow.sdk.exceptions import AirflowFailException
from jsonschema import Draft202012Validator

from dsbridge.callback.event import event_id_for
from dsbridge.callback.signing import verify
from dsbridge.operators.notify import CallbackOperator, DeliveryRetryable, OutcomeCallbackOperator, check_delivery

REPO = Path(__file__).resolve().parents[3]
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"  # the test connection's (tests/conftest.py)
SCHEMA = json.loads((REPO / "plugins/dsbridge/callback/event.schema.json").read_text())
RUN = {
    "run_id": 77,
    "run_page_url": "http://db/#job/runs/77",
    "start_time": 1_764_410_000_000,
    "end_time": 1_764_410_003_500,
    "execution_duration": 0,
    "tasks": [],
}


def deliver(contract, context, outcome):
    endpoint = contract.success_path if outcome == "success" else contract.failure_path
    operator = CallbackOperator(task_id=f"notify_{outcome}", outcome=outcome, endpoint=endpoint)
    with mock.patch("airflow.providers.http.operators.http.HttpOperator.execute") as http_execute:
        operator.execute(context)
    http_execute.assert_called_once()
    return operator


def test_success_event(contract, context_factory):
    collected = {
        "result": {"threshold": 0.4},
        "result_inline": True,
        "result_location": "s3://r/k/curve.json",
    }
    context = context_factory(
        "notify_success",
        pulls={
            ("submit", "request"): {"request_id": "req-42", "output_path": "s3://r/k/", "attempt": 0},
            ("wait", "return_value"): RUN,
            ("collect", "return_value"): collected,
        },
    )
    operator = deliver(contract, context, "success")

    assert operator.endpoint == "/callbacks/dsbridge" and operator.method == "POST"
    event = verify([SECRET], operator.data, operator.headers)
    Draft202012Validator(SCHEMA).validate(event)
    assert event["type"] == "request.succeeded"
    assert event["request_id"] == "req-42"
    assert event["result"] == {"threshold": 0.4}
    assert event["result_location"] == "s3://r/k/curve.json"
    assert event["error"] is None
    assert event["links"]["databricks_run"] == "http://db/#job/runs/77"
    assert event["links"]["airflow_run"].endswith("/dags/merchant_threshold/runs/req-42")
    assert event["databricks_run_id"] == 77
    assert event["timings"]["notebook_seconds"] == 3.5
    assert operator.headers["webhook-id"] == event["event_id"]


def test_failure_event_carries_the_notebook_error(contract, context_factory):
    recorded = {
        "type": "request.failed",
        "message": "ValueError: no orders",
        "trace": "Traceback ...",
        "failed_task": "wait",
        "databricks_state": {"result_state": "FAILED"},
    }
    context = context_factory(
        "notify_failure",
        pulls={("wait", "dsbridge_error"): recorded, ("submit", "request"): {"request_id": "req-42"}},
    )
    event = verify([SECRET], deliver(contract, context, "failure").data, deliver(contract, context, "failure").headers)
    Draft202012Validator(SCHEMA).validate(event)
    assert event["type"] == "request.failed"
    assert event["error"]["message"] == "ValueError: no orders"
    assert event["error"]["trace"] == "Traceback ..."
    assert event["result"] is None and event["result_location"] is None


def test_cancelled_event(contract, context_factory):
    context = context_factory(
        "notify_failure",
        pulls={("wait", "dsbridge_error"): {"type": "request.cancelled", "message": "cancelled"}},
    )
    event = json.loads(deliver(contract, context, "failure").data)
    assert event["type"] == "request.cancelled"
    assert event["request_id"] == "req-42"  # from the run id when submit never ran


def test_retry_sends_the_same_bytes_and_event_id(contract, context_factory):
    context = context_factory("notify_failure", pulls={("submit", "dsbridge_error"): {"message": "refused"}})
    first = deliver(contract, context, "failure")
    context["ti"].pulls.clear()  # even if upstream XComs changed, the kept event is resent
    second = deliver(contract, context, "failure")
    assert first.data == second.data
    assert first.headers["webhook-id"] == second.headers["webhook-id"]


def test_cleared_run_is_a_new_event(contract, context_factory):
    first = deliver(contract, context_factory("notify_failure"), "failure")
    second = deliver(contract, context_factory("notify_failure", clear_number=1), "failure")
    assert json.loads(first.data)["event_id"] != json.loads(second.data)["event_id"]


def test_missing_signing_secret_is_a_clear_error(contract, context_factory, monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_OPTIMIZATION_SERVICE", json.dumps({"conn_type": "http", "host": "http://x"}))
    operator = CallbackOperator(task_id="notify_success", outcome="success", endpoint="/callbacks/dsbridge")
    with pytest.raises(ValueError, match="has no signing secret"):
        operator.execute(context_factory("notify_success"))


@pytest.mark.parametrize(
    ("reason", "event_type", "message"),
    [("cancelled", "request.cancelled", "cancelled by the caller"), ("timed_out", "request.failed", "time limit")],
)
def test_outcome_event_reports_the_job_run(contract, context_factory, reason, event_type, message):
    job_run = ("merchant_threshold", "req-9")
    context = context_factory(
        "notify_outcome",
        run_id="merchant_threshold__abc__0",
        params={
            "job": "merchant_threshold",
            "run_id": "req-9",
            "request_id": "req-9",
            "attempt": 0,
            "requested_at": "2026-11-29T10:00:00+00:00",
            "reason": reason,
        },
        pulls={
            (*job_run, "submit", "run_id"): 501,
            (*job_run, "submit", "run_page_url"): "http://db/#job/runs/501",
        },
    )
    context["ti"].dagrun_states[job_run] = "failed"
    operator = OutcomeCallbackOperator(task_id="notify_outcome")
    with (
        mock.patch("airflow.providers.http.operators.http.HttpOperator.execute"),
        mock.patch("dsbridge.operators.notify.DatabricksHook") as hook_cls,
    ):
        operator.execute(context)
    hook_cls.return_value.cancel_run.assert_called_once_with(501)
    event = verify([SECRET], operator.data, operator.headers)
    Draft202012Validator(SCHEMA).validate(event)
    assert operator.endpoint == contract.failure_path
    assert event["type"] == event_type and message in event["error"]["message"]
    assert event["request_id"] == "req-9" and event["job"] == "merchant_threshold"
    assert event["links"]["airflow_run"].endswith("/dags/merchant_threshold/runs/req-9")
    assert event["databricks_run_id"] == 501
    # The same request's event id, whichever DAG delivers it: the receiver keeps one final event.
    assert event["event_id"] == event_id_for("merchant_threshold", "req-9", 0)


@pytest.mark.parametrize("status", [200, 201, 204])
def test_2xx_is_delivered(status):
    assert check_delivery(mock.Mock(status_code=status, text="")) is True


@pytest.mark.parametrize("status", [408, 429, 500, 502, 503, 504])
def test_busy_or_broken_receiver_is_retried(status):
    with pytest.raises(DeliveryRetryable, match=str(status)):
        check_delivery(mock.Mock(status_code=status, text="try later"))


@pytest.mark.parametrize("status", [301, 302, 400, 401, 403, 404, 410, 413, 422])
def test_refusal_fails_fast_with_the_fix(status):
    with pytest.raises(AirflowFailException, match=rf"refused the event with {status}.*clear this task"):
        check_delivery(mock.Mock(status_code=status, text="x" * 10_000))


def test_callback_never_follows_redirects_and_checks_every_answer(contract):
    operator = CallbackOperator(task_id="notify_success", outcome="success", endpoint=contract.success_path)
    assert operator.extra_options["allow_redirects"] is False
    assert operator.extra_options["check_response"] is False
    assert operator.response_check is check_delivery


@pytest.mark.parametrize("state", ["running", "queued", "success"])
def test_outcome_refuses_a_job_run_that_did_not_fail(context_factory, state):
    params = {"job": "merchant_threshold", "run_id": "req-9", "request_id": "req-9", "reason": "cancelled"}
    context = context_factory("notify_outcome", params=params)
    context["ti"].dagrun_states["merchant_threshold", "req-9"] = state
    operator = OutcomeCallbackOperator(task_id="notify_outcome")
    with (
        mock.patch("airflow.providers.http.operators.http.HttpOperator.execute") as http_execute,
        mock.patch("dsbridge.operators.notify.DatabricksHook") as hook_cls,
        pytest.raises(AirflowFailException, match="not failed"),
    ):
        operator.execute(context)
    http_execute.assert_not_called()
    hook_cls.return_value.cancel_run.assert_not_called()
