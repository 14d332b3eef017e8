"""Every job DAG loads and keeps the rules: chain, retries, notifiers, params, no schedule."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from airflow.dag_processing.dagbag import DagBag

from dsbridge.contract import discover_contracts
from dsbridge.notifiers.log import AlertLogNotifier
from dsbridge.operators.notify import OutcomeCallbackOperator
from dsbridge.outcomes_dag import OUTCOMES_DAG_ID
from dsbridge.retry import HorizonRetryPolicy, retries_to_cover
from dsbridge.settings import load_settings

REPO = Path(__file__).resolve().parents[2]
DAGS = REPO / "dags"


@pytest.fixture(scope="module")
def dagbag() -> DagBag:
    return DagBag(dag_folder=DAGS)


def job_names() -> list[str]:
    contracts, _ = discover_contracts(REPO / "notebooks")
    return [c.name for c in contracts]


def test_no_import_errors(dagbag: DagBag):
    assert dagbag.import_errors == {}


def test_one_dag_per_contract_plus_outcomes(dagbag: DagBag):
    assert sorted(dagbag.dag_ids) == sorted([*job_names(), OUTCOMES_DAG_ID])


def test_outcomes_dag_delivers_with_retries_and_alerts(dagbag: DagBag):
    dag = dagbag.dags[OUTCOMES_DAG_ID]
    assert dag.schedule is None
    (task,) = dag.tasks
    assert isinstance(task, OutcomeCallbackOperator)
    assert task.retries >= 2 and task.retry_exponential_backoff
    assert any(isinstance(cb, AlertLogNotifier) for cb in task.on_failure_callback)
    assert set(dag.params) == {"job", "run_id", "attempt", "reason", "success_path", "failure_path"}
    assert isinstance(task.retry_policy, HorizonRetryPolicy) and task.retry_policy.horizon == "callback"


@pytest.mark.parametrize("job", job_names())
def test_job_dag_rules(dagbag: DagBag, job: str):
    dag = dagbag.dags[job]
    assert dag.schedule is None
    assert "dsbridge" in dag.tags
    assert dag.doc_md and "## Parameters" in dag.doc_md
    assert dag.dagrun_timeout is not None
    tasks = {t.task_id: t for t in dag.tasks}
    assert set(tasks) == {"submit", "wait", "collect", "notify_success", "notify_failure"}
    assert tasks["submit"].downstream_task_ids == {"wait", "notify_failure"}
    assert tasks["wait"].downstream_task_ids == {"collect", "notify_failure"}
    assert tasks["collect"].downstream_task_ids == {"notify_success", "notify_failure"}
    assert tasks["notify_failure"].trigger_rule == "one_failed"
    assert tasks["notify_success"].trigger_rule == "all_success"
    assert tasks["wait"].deferrable is True and tasks["wait"].start_from_trigger is True
    assert tasks["wait"].start_trigger_args.trigger_kwargs["end_task"] is True
    assert tasks["wait"].retries == 0  # ends in the triggerer; outages are ridden out there
    for task in dag.tasks:
        assert task.retries >= 2 or task.task_id == "wait", task.task_id
        assert task.retry_exponential_backoff, task.task_id
        assert task.max_retry_delay is not None, task.task_id
        assert task.execution_timeout is not None, task.task_id
        assert task.owner != "airflow", task.task_id
        assert task.doc_md, task.task_id
        assert any(isinstance(cb, AlertLogNotifier) for cb in task.on_failure_callback), task.task_id
        assert any(isinstance(cb, AlertLogNotifier) for cb in task.on_retry_callback), task.task_id
        assert isinstance(task.retry_policy, HorizonRetryPolicy), task.task_id


@pytest.mark.parametrize("job", job_names())
def test_steps_that_wait_out_outages_have_the_retries_for_their_horizon(dagbag: DagBag, job: str):
    settings = load_settings()
    tasks = {t.task_id: t for t in dagbag.dags[job].tasks}
    horizons = {
        "submit": ("databricks", settings.databricks_horizon),
        "collect": ("collect", settings.collect_horizon),
        "notify_success": ("callback", settings.callback_horizon),
        "notify_failure": ("callback", settings.callback_horizon),
    }
    for task_id, (kind, horizon) in horizons.items():
        assert tasks[task_id].retry_policy.horizon == kind
        assert tasks[task_id].retries == retries_to_cover(horizon)
    # The wait rides out an outage inside the trigger, within its own timeout.
    assert tasks["wait"].timeout >= settings.databricks_horizon.total_seconds()


@pytest.mark.parametrize("job", job_names())
def test_the_run_timeout_cannot_overtake_a_pending_event(dagbag: DagBag, job: str):
    """Worst case: every step retries to its horizon, each try to its timeout."""
    dag = dagbag.dags[job]
    tasks = {t.task_id: t for t in dag.tasks}
    settings = load_settings()
    worst = (
        settings.databricks_horizon
        + 2 * tasks["submit"].execution_timeout
        + (tasks["wait"].retries + 1) * tasks["wait"].execution_timeout
        + settings.collect_horizon
        + 2 * tasks["collect"].execution_timeout
        + settings.callback_horizon
        + 2 * tasks["notify_success"].execution_timeout
    )
    assert dag.dagrun_timeout > worst


@pytest.mark.parametrize("job", job_names())
def test_params_have_schemas(dagbag: DagBag, job: str):
    params = dagbag.dags[job].params
    assert "request_id" in params
    for name, param in params.items():
        if name == "request_id":
            assert "pattern" in param.schema
        else:
            assert "type" in param.schema or "enum" in param.schema, name


def test_broken_contract_is_an_import_error_and_others_load(tmp_path: Path, monkeypatch):
    example = REPO / "notebooks" / "merchant_threshold"
    shutil.copytree(example, tmp_path / "good_job")
    shutil.copytree(example, tmp_path / "broken_job")
    contract = tmp_path / "broken_job" / "job.yaml"
    contract.write_text(contract.read_text().replace("timeout_minutes: 20", "timeout_minutes: soon"))
    monkeypatch.setenv("DSBRIDGE_NOTEBOOKS_DIR", str(tmp_path))

    bag = DagBag(dag_folder=DAGS)

    assert sorted(bag.dag_ids) == [OUTCOMES_DAG_ID, "good_job"]
    assert list(bag.import_errors) == [str(DAGS / "dsbridge_contract_check.py")]
    message = next(iter(bag.import_errors.values()))
    assert str(contract) in message
    assert "field 'timeout_minutes'" in message
    assert "Fix: give a whole number of minutes" in message
