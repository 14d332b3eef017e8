"""The callback: the right event for each outcome and attempt, signed, identical on every retry."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from unittest import mock

import pytest
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException
from jsonschema import Draft202012Validator

from dsbridge.callback.event import conflict_event_id_for, event_id_for
from dsbridge.callback.signing import verify
from dsbridge.final_events import outcome_run_id
from dsbridge.operators.notify import CallbackOperator, DeliveryRetryable, OutcomeCallbackOperator, check_delivery

REPO = Path(__file__).resolve().parents[3]
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"  # the test connection's (tests/conftest.py)
SCHEMA = json.loads((REPO / "plugins/dsbridge/callback/event.schema.json").read_text())
OUTPUT_PATH = "s3://r/runs/merchant_threshold/req-42/"
EVENTS_PREFIX = "runs/merchant_threshold/req-42/_dsbridge/events/"
RUN = {
    "run_id": 77,
    "run_page_url": "http://db/#job/runs/77",
    "start_time": 1_764_410_000_000,
    "end_time": 1_764_410_003_500,
    "execution_duration": 0,
    "tasks": [],
}
COLLECTED = {"result": {"threshold": 0.4}, "result_inline": True, "result_location": OUTPUT_PATH + "curve.json"}
REQUEST = {"request_id": "req-42", "output_path": OUTPUT_PATH, "attempt": 0}
HTTP_EXECUTE = "airflow.providers.http.operators.http.HttpOperator.execute"


def deliver(contract, context, outcome):
    endpoint = contract.success_path if outcome == "success" else contract.failure_path
    operator = CallbackOperator(task_id=f"notify_{outcome}", outcome=outcome, endpoint=endpoint)
    with mock.patch(HTTP_EXECUTE) as http_execute:
        operator.execute(context)
    http_execute.assert_called_once()
    return operator


def sent(operator) -> dict:
    """The event as a receiver sees it: verified, and valid against the published schema."""
    event = verify([SECRET], operator.data, operator.headers)
    Draft202012Validator(SCHEMA).validate(event)
    assert operator.headers["webhook-id"] == event["event_id"]
    return event


def success_context(context_factory, clear_number=0):
    return context_factory(
        "notify_success",
        clear_number=clear_number,
        pulls={
            ("submit", "request"): REQUEST,
            ("wait", "return_value"): RUN,
            ("collect", "return_value"): COLLECTED,
        },
    )


def failure_context(context_factory, clear_number=0, error=None):
    recorded = error or {
        "type": "request.failed",
        "code": "notebook_failed",
        "message": "ValueError: no orders",
        "trace": "Traceback ...",
        "failed_task": "wait",
        "databricks_state": {"result_state": "FAILED"},
    }
    return context_factory(
        "notify_failure",
        clear_number=clear_number,
        pulls={("wait", "dsbridge_error"): recorded, ("submit", "request"): REQUEST},
    )


def test_success_event(contract, context_factory, fake_s3):
    context = success_context(context_factory)
    operator = deliver(contract, context, "success")

    assert operator.endpoint == "/callbacks/dsbridge" and operator.method == "POST"
    event = sent(operator)
    assert event["type"] == "request.succeeded"
    assert event["request_id"] == "req-42"
    assert (event["attempt"], event["sequence"], event["supersedes"]) == (0, 1, None)
    assert event["event_id"] == event_id_for("merchant_threshold", "req-42", 0, "request.succeeded")
    assert event["result"] == {"threshold": 0.4}
    assert event["result_location"] == OUTPUT_PATH + "curve.json"
    assert event["error"] is None
    assert event["links"]["databricks_run"] == "http://db/#job/runs/77"
    assert event["links"]["airflow_run"].endswith("/dags/merchant_threshold/runs/req-42")
    assert event["databricks_run_id"] == 77
    assert event["timings"]["notebook_seconds"] == 3.5
    # Delivered, and recorded byte for byte in the request's ledger.
    assert context["task_state_store"].values["delivered:0"] == event["event_id"]
    assert fake_s3.objects["r", f"{EVENTS_PREFIX}000001-{event['event_id']}.json"] == operator.data


def test_failure_event_carries_the_notebook_error(contract, context_factory, fake_s3):
    event = sent(deliver(contract, failure_context(context_factory), "failure"))
    assert event["type"] == "request.failed"
    assert event["error"]["code"] == "notebook_failed"
    assert event["error"]["message"] == "ValueError: no orders"
    assert event["error"]["trace"] == "Traceback ..."
    assert event["result"] is None and event["result_location"] is None


def test_cancelled_event(contract, context_factory, fake_s3):
    context = context_factory(
        "notify_failure",
        pulls={("wait", "dsbridge_error"): {"type": "request.cancelled", "code": "run_cancelled", "message": "x"}},
    )
    event = sent(deliver(contract, context, "failure"))
    assert event["type"] == "request.cancelled"
    assert event["request_id"] == "req-42"  # from the run id when submit never ran


def test_an_unknown_error_code_becomes_internal_error(contract, context_factory, fake_s3):
    context = context_factory("notify_failure", pulls={("submit", "dsbridge_error"): {"message": "?", "code": "bogus"}})
    assert sent(deliver(contract, context, "failure"))["error"]["code"] == "internal_error"


def test_retry_sends_the_same_bytes_and_event_id(contract, context_factory, fake_s3):
    context = failure_context(context_factory)
    first = deliver(contract, context, "failure")
    context["ti"].pulls.clear()  # even if upstream XComs changed, the kept event is resent
    second = deliver(contract, context, "failure")
    assert first.data == second.data
    assert first.headers["webhook-id"] == second.headers["webhook-id"]
    assert len([k for b, k in fake_s3.objects if b == "r"]) == 1  # recorded once, in the request's bucket


def test_a_clear_after_a_failure_sends_a_superseding_success(contract, context_factory, fake_s3):
    """Attempt 0 failed; ops cleared `collect`; attempt 1 succeeds and names what it replaces."""
    failed = sent(deliver(contract, failure_context(context_factory), "failure"))
    succeeded = sent(deliver(contract, success_context(context_factory, clear_number=1), "success"))

    assert succeeded["event_id"] != failed["event_id"]
    assert succeeded["event_id"] == event_id_for("merchant_threshold", "req-42", 1, "request.succeeded")
    assert (succeeded["attempt"], succeeded["sequence"]) == (1, 2)
    assert succeeded["supersedes"] == failed["event_id"]


def test_a_new_attempt_never_resends_the_old_attempts_bytes(contract, context_factory, fake_s3):
    """The task state store outlives clears: events are kept per attempt, not under one key."""
    context = failure_context(context_factory)
    first = deliver(contract, context, "failure")
    context["dag_run"].clear_number = 1
    second = deliver(contract, context, "failure")
    assert first.data != second.data
    again = sent(second)
    assert again["attempt"] == 1 and again["supersedes"] == sent(first)["event_id"]
    assert sorted(context["task_state_store"].values) == ["delivered:0", "delivered:1", "event:0", "event:1"]


def test_a_request_id_conflict_is_an_event_of_its_own(contract, context_factory, fake_s3):
    error = {"type": "request.failed", "code": "request_id_conflict", "message": "taken", "failed_task": "submit"}
    context = context_factory(
        "notify_failure", run_id="run-b", params={"request_id": "req-x"}, pulls={("submit", "dsbridge_error"): error}
    )
    event = sent(deliver(contract, context, "failure"))
    assert event["request_id"] == "req-x"
    assert event["sequence"] == 0 and event["supersedes"] is None
    assert event["event_id"] == conflict_event_id_for("merchant_threshold", "req-x", "run-b", 0)
    assert event["event_id"] != event_id_for("merchant_threshold", "req-x", 0, "request.failed")
    assert fake_s3.keys() == []  # nothing written next to the first request's output


def test_s3_trouble_never_blocks_the_event(contract, context_factory, fake_s3):
    fake_s3.down = True
    event = sent(deliver(contract, success_context(context_factory, clear_number=1), "success"))
    assert event["type"] == "request.succeeded" and event["supersedes"] is None


def test_a_refusal_is_remembered_as_given_up(contract, context_factory, fake_s3):
    context = success_context(context_factory)
    operator = CallbackOperator(task_id="notify_success", outcome="success", endpoint=contract.success_path)
    with (
        mock.patch(HTTP_EXECUTE, side_effect=AirflowFailException("refused with 400")),
        pytest.raises(AirflowFailException),
    ):
        operator.execute(context)
    assert context["task_state_store"].values["gave_up:0"].startswith("refused")
    assert "delivered:0" not in context["task_state_store"].values


def test_missing_signing_secret_is_a_clear_error(contract, context_factory, fake_s3, monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_OPTIMIZATION_SERVICE", json.dumps({"conn_type": "http", "host": "http://x"}))
    operator = CallbackOperator(task_id="notify_success", outcome="success", endpoint="/callbacks/dsbridge")
    with pytest.raises(ValueError, match="has no signing secret"):
        operator.execute(context_factory("notify_success"))


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


# --- the outcome DAG's task ------------------------------------------------------------------------

JOB_RUN = ("merchant_threshold", "req-9")
OUTCOME_EVENTS = "runs/merchant_threshold/req-9/_dsbridge/events/"


def job_run(state="failed", clear_number=0, conf=None):
    return SimpleNamespace(
        dag_id="merchant_threshold",
        run_id="req-9",
        state=state,
        clear_number=clear_number,
        conf=conf if conf is not None else {"merchant_id": "m1"},
        start_date=None,
    )


def outcome_context(context_factory, reason="cancelled", attempt=0, pulls=None):
    context = context_factory(
        "notify_outcome",
        run_id=outcome_run_id("merchant_threshold", "req-9", attempt),
        params={
            "job": "merchant_threshold",
            "run_id": "req-9",
            "attempt": attempt,
            "reason": reason,
            "success_path": "/callbacks/ok",
            "failure_path": "/callbacks/failed",
        },
        pulls={(*JOB_RUN, "submit", "run_id"): 501, **(pulls or {})},
    )
    context["dag_run"].run_type = "operator_triggered"
    return context


def run_outcome(context, the_job_run, runs=()):
    operator = OutcomeCallbackOperator(task_id="notify_outcome")
    with (
        mock.patch("dsbridge.operators.notify.fetch_dag_run", return_value=the_job_run),
        mock.patch(HTTP_EXECUTE) as http_execute,
        mock.patch("dsbridge.operators.notify.DatabricksHook") as hook_cls,
    ):
        hook_cls.return_value._do_api_call.return_value = {"runs": list(runs), "has_more": False}
        operator.execute(context)
    return operator, http_execute, hook_cls.return_value


@pytest.mark.parametrize(
    ("reason", "event_type", "code"),
    [("cancelled", "request.cancelled", "cancelled"), ("timed_out", "request.failed", "timed_out")],
)
def test_outcome_reports_a_job_run_stopped_from_outside(context_factory, fake_s3, reason, event_type, code):
    live = {"run_id": 502, "run_name": "dsbridge merchant_threshold req-9", "state": {"life_cycle_state": "RUNNING"}}
    operator, _, hook = run_outcome(outcome_context(context_factory, reason), job_run(), runs=[live])
    assert sorted(call.args[0] for call in hook.cancel_run.call_args_list) == [501, 502]
    event = sent(operator)
    assert operator.endpoint == "/callbacks/failed"
    assert event["type"] == event_type and event["error"]["code"] == code
    assert event["request_id"] == "req-9" and event["job"] == "merchant_threshold"
    assert event["links"]["airflow_run"].endswith("/dags/merchant_threshold/runs/req-9")
    assert event["event_id"] == event_id_for("merchant_threshold", "req-9", 0, event_type)
    assert fake_s3.keys("runs/merchant_threshold/req-9/_dsbridge/") == [
        "runs/merchant_threshold/req-9/_dsbridge/events/" + f"000001-{event['event_id']}.json",
        "runs/merchant_threshold/req-9/_dsbridge/request.json",  # claimed: it never reached submit
    ]


def test_outcome_resends_the_event_the_job_run_had_built(context_factory, fake_s3):
    """notify_success built the event and was cut short (run marked failed mid-delivery)."""
    pending = json.dumps(
        {"event_id": "evt_" + "1" * 32, "sequence": 1, "type": "request.succeeded", "request_id": "req-9"}
    ).encode()
    fake_s3.objects["r", f"{OUTCOME_EVENTS}000001-evt_{'1' * 32}.json"] = pending
    with mock.patch.dict("os.environ", {"DSBRIDGE_RESULTS_BUCKET": "r"}):
        operator, _, hook = run_outcome(outcome_context(context_factory), job_run())
    assert operator.data == pending
    assert operator.headers["webhook-id"] == "evt_" + "1" * 32
    assert operator.endpoint == "/callbacks/ok"
    hook.cancel_run.assert_not_called()


def test_marked_success_with_a_collected_result_is_a_success(context_factory, fake_s3):
    context = outcome_context(
        context_factory, "marked_success", pulls={(*JOB_RUN, "collect", "return_value"): COLLECTED}
    )
    operator, _, hook = run_outcome(context, job_run(state="success"))
    event = sent(operator)
    assert event["type"] == "request.succeeded" and event["result"] == {"threshold": 0.4}
    hook.cancel_run.assert_not_called()


def test_marked_success_mid_notebook_is_stopped_without_result(context_factory, fake_s3):
    operator, _, hook = run_outcome(outcome_context(context_factory, "marked_success"), job_run(state="success"))
    event = sent(operator)
    assert event["type"] == "request.cancelled" and event["error"]["code"] == "stopped_without_result"
    hook.cancel_run.assert_called_once_with(501)


@pytest.mark.parametrize(
    ("the_job_run", "why"),
    [
        (job_run(state="running"), "reports for itself"),
        (job_run(state="queued"), "reports for itself"),
        (job_run(clear_number=1), "moved on to attempt 1"),
    ],
)
def test_outcome_does_nothing_for_a_run_that_moved_on(context_factory, fake_s3, the_job_run, why):
    operator = OutcomeCallbackOperator(task_id="notify_outcome")
    with (
        mock.patch("dsbridge.operators.notify.fetch_dag_run", return_value=the_job_run),
        mock.patch(HTTP_EXECUTE) as http_execute,
        mock.patch("dsbridge.operators.notify.DatabricksHook") as hook_cls,
        pytest.raises(AirflowSkipException, match=why),
    ):
        operator.execute(outcome_context(context_factory))
    http_execute.assert_not_called()
    hook_cls.return_value.cancel_run.assert_not_called()


def test_outcome_refuses_a_reason_that_does_not_fit_the_run(context_factory, fake_s3):
    with (
        mock.patch("dsbridge.operators.notify.fetch_dag_run", return_value=job_run(state="success")),
        mock.patch(HTTP_EXECUTE) as http_execute,
        pytest.raises(AirflowFailException, match="does not fit"),
    ):
        OutcomeCallbackOperator(task_id="notify_outcome").execute(outcome_context(context_factory, "cancelled"))
    http_execute.assert_not_called()


def test_outcome_of_a_conflicting_run_never_touches_the_owners_story(context_factory, fake_s3):
    claim = {"airflow": {"dag_run_id": "owner-run"}, "params_sha256": "other"}
    fake_s3.objects["dsbridge-results", "runs/merchant_threshold/req-9/_dsbridge/request.json"] = json.dumps(
        claim
    ).encode()
    operator, _, _ = run_outcome(outcome_context(context_factory), job_run())
    event = sent(operator)
    assert event["sequence"] == 0 and event["error"]["code"] == "request_id_conflict"
    assert event["event_id"] == conflict_event_id_for("merchant_threshold", "req-9", "req-9", 0)
    assert fake_s3.keys(OUTCOME_EVENTS) == []


@pytest.mark.parametrize(("run_type", "run_id"), [("manual", None), ("operator_triggered", "forged-run")])
def test_outcome_refuses_runs_dsbridge_did_not_start(context_factory, fake_s3, run_type, run_id):
    """The forgery of the issue: a hand-made outcome run naming someone else's job run."""
    context = outcome_context(context_factory)
    context["dag_run"].run_type = run_type
    context["dag_run"].run_id = run_id or context["dag_run"].run_id
    with (
        mock.patch("dsbridge.operators.notify.fetch_dag_run", return_value=job_run()) as fetch,
        mock.patch(HTTP_EXECUTE) as http_execute,
        pytest.raises(AirflowFailException, match="started by dsbridge only"),
    ):
        OutcomeCallbackOperator(task_id="notify_outcome").execute(context)
    fetch.assert_not_called()
    http_execute.assert_not_called()
    assert fake_s3.keys() == []
