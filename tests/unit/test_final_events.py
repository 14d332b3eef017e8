"""The listener's and the reconciler's shared core, against a real Airflow metadata database.

Job runs are created with Airflow's own `trigger_dag` on the DAGs of `dags/`, then ended the ways
a request can end; the test asserts which of them get an outcome run, and that nothing is started
twice.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from dsbridge.final_events import (
    OUTCOMES_DAG_ID,
    ensure_final_event,
    outcome_run_id,
    reason_of,
    settled_runs,
)
from dsbridge.reconciler import sweep

REPO = Path(__file__).resolve().parents[2]
JOB = "merchant_threshold"
pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def synced_dags() -> None:
    from airflow.dag_processing.bundles.manager import DagBundlesManager
    from airflow.dag_processing.dagbag import DagBag, sync_bag_to_db
    from airflow.utils.db import initdb
    from airflow.utils.session import create_session

    initdb()
    DagBundlesManager().sync_bundles_to_db()
    bag = DagBag(dag_folder=REPO / "dags", bundle_name="dags-folder")
    assert not bag.import_errors
    with create_session() as session:
        sync_bag_to_db(bag, "dags-folder", None, session=session)


@pytest.fixture
def session(synced_dags):
    from airflow.utils.session import create_session

    with create_session() as session:
        yield session


_counter = iter(range(10**6))


def job_run(session, state: str, *, clear_number: int = 0, age: timedelta = timedelta(minutes=1)):
    """A job run that ended `age` ago in `state`."""
    from airflow._shared.timezones import timezone
    from airflow.api.common.trigger_dag import trigger_dag
    from airflow.utils.types import DagRunTriggeredByType

    run = trigger_dag(
        JOB,
        run_id=f"req-{next(_counter)}",
        conf={"merchant_id": "m1"},
        triggered_by=DagRunTriggeredByType.TEST,
        session=session,
    )
    run.state = state
    run.clear_number = clear_number
    run.start_date = timezone.utcnow() - age - timedelta(minutes=1)
    run.end_date = timezone.utcnow() - age
    session.flush()
    return run


def mark(session, run, task_id: str, key: str) -> None:
    from airflow.models.task_state_store import TaskStateStoreModel

    session.add(
        TaskStateStoreModel(
            dag_run_id=run.id, task_id=task_id, map_index=-1, key=key, dag_id=run.dag_id, run_id=run.run_id, value='"x"'
        )
    )
    session.flush()


def outcome_runs(session) -> dict[str, dict]:
    from airflow.models.dagrun import DagRun
    from sqlalchemy import select

    runs = session.scalars(select(DagRun).where(DagRun.dag_id == OUTCOMES_DAG_ID))
    return {run.run_id: (run.conf, str(run.run_type)) for run in runs}


def test_a_cancelled_run_gets_one_outcome_run_with_the_jobs_callback_paths(session):
    run = job_run(session, "failed")
    started = ensure_final_event(session, run, reason_of("failed", "Dag Run's state was manually set"))
    assert started == outcome_run_id(JOB, run.run_id, 0)
    conf, run_type = outcome_runs(session)[started]
    assert run_type == "operator_triggered"
    assert conf == {
        "job": JOB,
        "run_id": run.run_id,
        "attempt": 0,
        "reason": "cancelled",
        "success_path": "/callbacks/dsbridge",
        "failure_path": "/callbacks/dsbridge",
    }
    assert ensure_final_event(session, run, "cancelled") is None  # never twice


@pytest.mark.parametrize(
    ("task_id", "key"), [("notify_failure", "delivered"), ("notify_success", "gave_up"), ("submit", "duplicate")]
)
def test_a_settled_attempt_needs_no_outcome_run(session, task_id, key):
    run = job_run(session, "failed", clear_number=2)
    mark(session, run, task_id, f"{key}:2")
    assert ensure_final_event(session, run, "cancelled") is None
    assert outcome_run_id(JOB, run.run_id, 2) not in outcome_runs(session)


def test_an_earlier_attempts_mark_does_not_settle_a_later_attempt(session):
    run = job_run(session, "success", clear_number=1)
    mark(session, run, "notify_success", "delivered:0")
    assert settled_runs(session, JOB, {run.run_id: 1}) == set()
    assert ensure_final_event(session, run, reason_of("success", "")) == outcome_run_id(JOB, run.run_id, 1)
    assert outcome_runs(session)[outcome_run_id(JOB, run.run_id, 1)][0]["reason"] == "marked_success"


def test_the_outcomes_dag_itself_is_not_a_job(session):
    from airflow.models.dagrun import DagRun
    from sqlalchemy import select

    run = job_run(session, "failed")
    ensure_final_event(session, run, "cancelled")
    outcome = session.scalars(select(DagRun).where(DagRun.dag_id == OUTCOMES_DAG_ID)).first()
    assert ensure_final_event(session, outcome, "cancelled") is None


def test_a_paused_outcomes_dag_is_unpaused_with_an_alert(session, tmp_path, monkeypatch):
    from airflow.models.dag import DagModel
    from sqlalchemy import update

    alerts = tmp_path / "alerts.jsonl"
    monkeypatch.setenv("DSBRIDGE_ALERTS_FILE", str(alerts))
    session.execute(update(DagModel).where(DagModel.dag_id == OUTCOMES_DAG_ID).values(is_paused=True))
    ensure_final_event(session, job_run(session, "failed"), "cancelled")
    assert session.get(DagModel, OUTCOMES_DAG_ID).is_paused is False
    assert '"event": "outcomes_unpaused"' in alerts.read_text()


def test_the_sweep_finds_what_the_listener_missed_and_only_that(session):
    missed = job_run(session, "failed")
    delivered = job_run(session, "success")
    mark(session, delivered, "notify_success", "delivered:0")
    too_old = job_run(session, "failed", age=timedelta(days=3))
    running = job_run(session, "running")

    started = sweep(session, lookback=timedelta(days=2))

    assert outcome_run_id(JOB, missed.run_id, 0) in started
    for other in (delivered, too_old, running):
        assert outcome_run_id(JOB, other.run_id, 0) not in started
    assert sweep(session, lookback=timedelta(days=2)) == []  # the second pass has nothing to do


def test_the_sweep_recognises_a_timed_out_run(session):
    from airflow.models.dagbag import DBDagBag

    run = job_run(session, "failed")
    limit = DBDagBag().get_dag_for_run(run, session).dagrun_timeout
    run.start_date = run.end_date - limit - timedelta(seconds=1)
    session.flush()
    sweep(session)
    assert outcome_runs(session)[outcome_run_id(JOB, run.run_id, 0)][0]["reason"] == "timed_out"
