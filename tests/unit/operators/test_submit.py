"""`submit`: the exact runs/submit payload, the request claim, one live run per request, and the
failures caught before anything is submitted."""

from __future__ import annotations

import json
from unittest import mock

import pytest
from airflow.providers.databricks.exceptions import DatabricksApiError
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

from dsbridge.operators.submit import NotebookSubmitRunOperator, idempotency_token
from dsbridge.retry import Transient

HOOK = "airflow.providers.databricks.operators.databricks.DatabricksHook"
PARAMS = {
    "request_id": None,
    "merchant_id": "m_1042",
    "target_chargeback_rate": 0.02,
    "lookback_days": 30,
    "orders_path": None,
}
CLAIM_KEY = "runs/merchant_threshold/req-42/_dsbridge/request.json"


@pytest.fixture(autouse=True)
def results_bucket(monkeypatch):
    monkeypatch.setenv("DSBRIDGE_RESULTS_BUCKET", "results")
    monkeypatch.setenv("DSBRIDGE_RESULTS_PREFIX", "runs")


@pytest.fixture
def operator(contract):
    return NotebookSubmitRunOperator(task_id="submit", contract=contract)


def submit(operator, context, *, runs=(), submit_returns=77):
    """Run `execute` against a mocked Databricks hook whose runs/list answers `runs`."""
    with mock.patch(HOOK) as hook_cls:
        hook = hook_cls.return_value
        hook.submit_run.return_value = submit_returns
        hook._do_api_call.return_value = {"runs": list(runs), "has_more": False}
        try:
            operator.execute(context)
        finally:
            operator.__dict__.pop("_hook", None)
    return hook


def test_exact_submit_payload(operator, context_factory, fake_s3, monkeypatch):
    monkeypatch.setenv("DSBRIDGE_WORKSPACE_ROOT", "/Repos/ds")
    context = context_factory("submit", conf={"merchant_id": "m_1042", "target_chargeback_rate": 0.02}, params=PARAMS)
    hook = submit(operator, context)

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
    # The run is remembered per attempt, for a retry of this attempt and for later attempts.
    assert context["task_state_store"].values == {"databricks_run:0": 77}
    claim = json.loads(fake_s3.objects["results", CLAIM_KEY])
    assert claim["airflow"] == {"dag_id": "merchant_threshold", "dag_run_id": "req-42"}
    assert claim["request_id"] == "req-42"


GIT_URL = "https://github.com/acme/dsbridge.git"
COMMIT = "0123456789abcdef0123456789abcdef01234567"


def git_mode(monkeypatch, **extra: str) -> None:
    monkeypatch.setenv("DSBRIDGE_NOTEBOOK_SOURCE", "git")
    monkeypatch.setenv("DSBRIDGE_GIT_URL", GIT_URL)
    for name, value in extra.items():
        monkeypatch.setenv(name, value)


def test_in_git_mode_the_notebook_is_the_one_of_the_dag_runs_commit(operator, context_factory, fake_s3, monkeypatch):
    git_mode(monkeypatch, DSBRIDGE_GIT_COMMIT="f" * 40)  # the bundle's own version wins over the setting
    context = context_factory("submit", conf={"merchant_id": "m_1042"}, params=PARAMS)
    context["dag_run"].bundle_version = COMMIT
    payload = submit(operator, context).submit_run.call_args.args[0]
    assert payload["git_source"] == {"git_url": GIT_URL, "git_provider": "gitHub", "git_commit": COMMIT}
    (task,) = payload["tasks"]
    assert task["notebook_task"]["notebook_path"] == "notebooks/merchant_threshold/merchant_threshold"
    assert task["notebook_task"]["source"] == "GIT"
    assert task["notebook_task"]["base_parameters"]["request_id"] == "req-42"


def test_without_a_bundle_version_the_configured_commit_is_used(operator, context_factory, fake_s3, monkeypatch):
    git_mode(
        monkeypatch, DSBRIDGE_GIT_COMMIT=COMMIT, DSBRIDGE_GIT_PROVIDER="gitLab", DSBRIDGE_GIT_NOTEBOOKS_PATH="/ds/"
    )
    context = context_factory("submit", conf={"merchant_id": "m_1042"}, params=PARAMS)
    payload = submit(operator, context).submit_run.call_args.args[0]
    assert payload["git_source"] == {"git_url": GIT_URL, "git_provider": "gitLab", "git_commit": COMMIT}
    assert payload["tasks"][0]["notebook_task"]["notebook_path"] == "ds/merchant_threshold/merchant_threshold"


@pytest.mark.parametrize(("unset", "named"), [("DSBRIDGE_GIT_URL", "DSBRIDGE_GIT_URL"), (None, "GitDagBundle")])
def test_git_mode_without_what_it_needs_fails_the_request_before_submitting(
    operator, context_factory, fake_s3, monkeypatch, unset, named
):
    git_mode(monkeypatch)
    if unset:
        monkeypatch.delenv(unset)
    context = context_factory("submit", conf={"merchant_id": "m_1042"}, params=PARAMS)
    with mock.patch(HOOK) as hook_cls, pytest.raises(AirflowFailException, match=named):
        operator.execute(context)
    hook_cls.return_value.submit_run.assert_not_called()
    assert context["ti"].pushed["dsbridge_error"]["code"] == "submit_failed"
    assert "run_id" not in context["ti"].pushed


def test_an_unknown_notebook_source_is_named_with_its_choices(monkeypatch):
    from dsbridge.settings import load_settings

    monkeypatch.setenv("DSBRIDGE_NOTEBOOK_SOURCE", "dbfs")
    with pytest.raises(ValueError, match="DSBRIDGE_NOTEBOOK_SOURCE='dbfs' must be one of: folder, git, workspace"):
        load_settings()


def test_token_is_stable_per_request_and_changes_per_attempt():
    token = idempotency_token("job", "req-1")
    assert token == idempotency_token("job", "req-1")
    assert token != idempotency_token("job", "req-2")
    assert token != idempotency_token("other", "req-1")
    assert token != idempotency_token("job", "req-1", attempt=1)
    assert len(token) <= 64


def test_retry_of_the_same_attempt_reconnects_instead_of_resubmitting(operator, context_factory, fake_s3):
    context = context_factory("submit", conf={"merchant_id": "m_1"}, params=PARAMS)
    context["task_state_store"].set("databricks_run:0", 77)
    hook = submit(operator, context)
    hook.submit_run.assert_not_called()
    assert context["ti"].pushed["run_id"] == 77


def conf_of(request_id: str, merchant: str) -> dict:
    return {"merchant_id": merchant, "request_id": request_id}


def test_same_request_id_and_parameters_from_another_run_is_the_same_request(contract, context_factory, fake_s3):
    first = context_factory(
        "submit", run_id="run-a", conf=conf_of("req-x", "m1"), params=PARAMS | conf_of("req-x", "m1")
    )
    submit(NotebookSubmitRunOperator(task_id="submit", contract=contract), first)

    second = context_factory(
        "submit", run_id="run-b", conf=conf_of("req-x", "m1"), params=PARAMS | conf_of("req-x", "m1")
    )
    with pytest.raises(AirflowSkipException, match="already served by DAG run 'run-a'"):
        submit(NotebookSubmitRunOperator(task_id="submit", contract=contract), second)
    assert second["task_state_store"].values == {"duplicate:0": "run-a"}
    assert "run_id" not in second["ti"].pushed


def test_same_request_id_with_other_parameters_is_refused_and_touches_nothing(contract, context_factory, fake_s3):
    first = context_factory(
        "submit", run_id="run-a", conf=conf_of("req-x", "m1"), params=PARAMS | conf_of("req-x", "m1")
    )
    submit(NotebookSubmitRunOperator(task_id="submit", contract=contract), first)
    before = dict(fake_s3.objects)

    second = context_factory(
        "submit", run_id="run-b", conf=conf_of("req-x", "m2"), params=PARAMS | conf_of("req-x", "m2")
    )
    with mock.patch(HOOK) as hook_cls, pytest.raises(AirflowFailException, match="already used by DAG run 'run-a'"):
        NotebookSubmitRunOperator(task_id="submit", contract=contract).execute(second)
    hook_cls.return_value.submit_run.assert_not_called()
    assert fake_s3.objects == before  # the first request's claim and output are untouched
    error = second["ti"].pushed["dsbridge_error"]
    assert error["code"] == "request_id_conflict" and error["failed_task"] == "submit"
    assert "request" not in second["ti"].pushed


def test_a_clear_adopts_the_live_run_of_an_earlier_attempt(operator, context_factory, fake_s3):
    """The lost-answer case: attempt 0's run exists but was never recorded; attempt 1 finds it by name."""
    context = context_factory("submit", conf={"merchant_id": "m_1"}, params=PARAMS, clear_number=1)
    live = {"run_id": 501, "run_name": "dsbridge merchant_threshold req-42", "state": {"life_cycle_state": "RUNNING"}}
    other = {"run_id": 502, "run_name": "dsbridge merchant_threshold req-43", "state": {"life_cycle_state": "RUNNING"}}
    hook = submit(operator, context, runs=[live, other])
    hook.submit_run.assert_not_called()
    hook.cancel_run.assert_not_called()
    assert context["ti"].pushed["run_id"] == 501
    assert context["task_state_store"].values == {"databricks_run:1": 501}
    path, params = hook._do_api_call.call_args.args
    assert path == ("GET", "2.2/jobs/runs/list")
    assert params["active_only"] == "true" and params["run_type"] == "SUBMIT_RUN"


def test_a_clear_starts_a_new_run_once_earlier_ones_ended(operator, context_factory, fake_s3):
    context = context_factory("submit", conf={"merchant_id": "m_1"}, params=PARAMS, clear_number=2)
    ending = {
        "run_id": 501,
        "run_name": "dsbridge merchant_threshold req-42",
        "state": {"life_cycle_state": "TERMINATING"},
    }
    with mock.patch(HOOK) as hook_cls, mock.patch("dsbridge.operators.submit.time.sleep") as sleep:
        hook = hook_cls.return_value
        hook._do_api_call.return_value = {"runs": [ending], "has_more": False}
        hook.get_run.return_value = {**ending, "state": {"life_cycle_state": "TERMINATED", "result_state": "CANCELED"}}
        hook.submit_run.return_value = 600
        operator.execute(context)
    sleep.assert_called()
    assert hook.submit_run.call_args.args[0]["idempotency_token"] == idempotency_token(
        "merchant_threshold", "req-42", 2
    )
    assert context["ti"].pushed["run_id"] == 600


def test_the_first_attempt_does_not_list_runs(operator, context_factory, fake_s3):
    hook = submit(operator, context_factory("submit", conf={"merchant_id": "m_1"}, params=PARAMS))
    hook._do_api_call.assert_not_called()


def test_unsafe_run_id_becomes_a_safe_unique_request_id(operator, context_factory, fake_s3):
    context = context_factory("submit", run_id="manual__2026-11-29T10:00:00+00:00", params=PARAMS)
    submit(operator, context, submit_returns=5)
    request_id = context["ti"].pushed["request"]["request_id"]
    assert request_id.startswith("manual__2026-11-29T10_00_00_00_00-")
    assert "/" not in request_id and ":" not in request_id


def test_unknown_conf_fields_fail_before_submit_but_after_the_claim(operator, context_factory, fake_s3):
    context = context_factory("submit", conf={"merchant_id": "m", "evil": "{{ 7*7 }}"}, params=PARAMS)
    with (
        mock.patch(HOOK) as hook_cls,
        pytest.raises(AirflowFailException, match=r"unknown parameter\(s\) \['evil'\]"),
    ):
        operator.execute(context)
    hook_cls.return_value.submit_run.assert_not_called()
    error = context["ti"].pushed["dsbridge_error"]
    assert error["failed_task"] == "submit" and error["code"] == "invalid_request"
    assert fake_s3.keys() == [CLAIM_KEY]  # the request id is taken: a fixed retry needs a new id


def test_oversized_parameters_fail_before_submit(operator, context_factory, fake_s3):
    params = dict(PARAMS, merchant_id="m", orders_path="s3://b/" + "x" * 1_100_000)
    context = context_factory("submit", params=params)
    with mock.patch(HOOK) as hook_cls, pytest.raises(AirflowFailException, match="at most 1 MB"):
        operator.execute(context)
    hook_cls.return_value.submit_run.assert_not_called()


def test_an_unreachable_databricks_is_transient(operator, context_factory, fake_s3):
    context = context_factory("submit", params=PARAMS)
    with mock.patch(HOOK) as hook_cls, pytest.raises(Transient, match="could not submit"):
        hook_cls.return_value.submit_run.side_effect = ConnectionError("refused")
        operator.execute(context)
    error = context["ti"].pushed["dsbridge_error"]
    assert "refused" in error["message"] and error["code"] == "submit_failed"


def test_a_refused_payload_is_not_transient(operator, context_factory, fake_s3):
    context = context_factory("submit", params=PARAMS)
    with mock.patch(HOOK) as hook_cls, pytest.raises(Exception, match="could not submit") as caught:
        hook_cls.return_value.submit_run.side_effect = DatabricksApiError(
            "INVALID_PARAMETER_VALUE", http_status_code=400
        )
        operator.execute(context)
    assert not isinstance(caught.value, Transient)


def test_an_unreachable_s3_at_the_claim_is_transient_and_submits_nothing(operator, context_factory, fake_s3):
    fake_s3.down = True
    context = context_factory("submit", params=PARAMS)
    with mock.patch(HOOK) as hook_cls, pytest.raises(Transient, match="could not record the request"):
        operator.execute(context)
    hook_cls.return_value.submit_run.assert_not_called()
