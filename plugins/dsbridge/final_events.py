"""No attempt at a request without a final event: the core shared by the listener and the reconciler.

A job run's own notify task normally delivers the event of the run's current attempt and leaves a
mark in its task state store (`delivered:<attempt>`, or `gave_up:<attempt>` after it alerted; a
duplicate request's submit leaves `duplicate:<attempt>`). A job run that ends without such a mark
-- the caller cancelled it, it timed out, someone marked it failed or successful by hand, its
delivery was cut short -- gets one `dsbridge_outcomes` run for that attempt, which delivers the
event. Everything here runs where Airflow's database is: the API server and scheduler (through the
listener) and the reconciler.
"""

from __future__ import annotations

import hashlib
import logging
from typing import Any

from dsbridge.contract.model import DEFAULT_CALLBACK_PATH
from dsbridge.notifiers.log import raise_alert

log = logging.getLogger(__name__)

OUTCOMES_DAG_ID = "dsbridge_outcomes"
JOB_TAG = "dsbridge"
SETTLED_MARKS = ("delivered", "gave_up", "duplicate")
NOTIFY_TASKS = {"success": "notify_success", "failure": "notify_failure"}
TIMED_OUT = "timed_out"
CANCELLED = "cancelled"
MARKED_SUCCESS = "marked_success"


def outcome_run_id(job: str, run_id: str, attempt: int) -> str:
    """One outcome run per (job run, attempt): a second start is refused by the run id."""
    digest = hashlib.sha256(f"{job}\n{run_id}".encode()).hexdigest()[:16]
    return f"{job}__{digest}__{attempt}"


def reason_of(state: str, msg: str) -> str:
    if state == "success":
        return MARKED_SUCCESS
    return TIMED_OUT if msg == "timed_out" else CANCELLED


def attempt_of(dag_run: Any) -> int:
    return int(getattr(dag_run, "clear_number", 0) or 0)


def is_job_dag(session: Any, dag_id: str) -> bool:
    """A dsbridge job's DAG (tagged `dsbridge`), not the outcomes DAG itself."""
    from airflow.models.dag import DagTag
    from sqlalchemy import select

    if dag_id == OUTCOMES_DAG_ID:
        return False
    tagged = select(DagTag.name).where(DagTag.dag_id == dag_id, DagTag.name == JOB_TAG)
    return session.scalar(tagged) is not None


def settled_runs(session: Any, dag_id: str, attempts: dict[str, int]) -> set[str]:
    """Which of the job's runs ({run id: attempt}) left a settled mark for their current attempt."""
    from airflow.models.task_state_store import TaskStateStoreModel
    from sqlalchemy import select

    if not attempts:
        return set()
    rows = session.execute(
        select(TaskStateStoreModel.run_id, TaskStateStoreModel.key).where(
            TaskStateStoreModel.dag_id == dag_id, TaskStateStoreModel.run_id.in_(list(attempts))
        )
    ).all()
    return {run_id for run_id, key in rows if key in {f"{mark}:{attempts[run_id]}" for mark in SETTLED_MARKS}}


def callback_paths(session: Any, dag_run: Any) -> dict[str, str]:
    """The job's callback paths, from the notify tasks of the DAG version the run used."""
    from airflow.models.dagbag import DBDagBag

    paths = {"success_path": DEFAULT_CALLBACK_PATH, "failure_path": DEFAULT_CALLBACK_PATH}
    try:
        dag = getattr(dag_run, "dag", None) or DBDagBag().get_dag_for_run(dag_run, session)
        for outcome, task_id in NOTIFY_TASKS.items():
            endpoint = getattr(dag.get_task(task_id), "endpoint", None) if dag else None
            if isinstance(endpoint, str) and endpoint.startswith("/"):
                paths[f"{outcome}_path"] = endpoint
    except Exception:
        log.warning("dsbridge: no callback paths for %s %s; using the default", dag_run.dag_id, dag_run.run_id)
    return paths


def ensure_outcomes_unpaused(session: Any) -> None:
    """A paused outcomes DAG would hold final events back forever: unpause it, and say so."""
    from airflow.models.dag import DagModel
    from sqlalchemy import select, update

    paused = session.scalar(select(DagModel.is_paused).where(DagModel.dag_id == OUTCOMES_DAG_ID))
    if paused:
        session.execute(update(DagModel).where(DagModel.dag_id == OUTCOMES_DAG_ID).values(is_paused=False))
        raise_alert(
            {
                "event": "outcomes_unpaused",
                "dag_id": OUTCOMES_DAG_ID,
                "error": f"{OUTCOMES_DAG_ID} was paused while final events were waiting; dsbridge unpaused it. "
                "Pause a job DAG instead to stop new requests.",
            }
        )


def start_outcome_run(session: Any, dag_run: Any, reason: str) -> str | None:
    """Start the outcome run of `dag_run`'s current attempt unless it exists; return its run id."""
    from airflow.models.dagrun import DagRun
    from sqlalchemy import select
    from sqlalchemy.exc import IntegrityError

    attempt = attempt_of(dag_run)
    run_id = outcome_run_id(dag_run.dag_id, dag_run.run_id, attempt)
    exists = select(DagRun.id).where(DagRun.dag_id == OUTCOMES_DAG_ID, DagRun.run_id == run_id)
    if session.scalar(exists) is not None:
        return None
    ensure_outcomes_unpaused(session)
    try:
        _trigger_outcome_run(session, dag_run, run_id, attempt, reason)
    except IntegrityError:  # the listener and the reconciler met; one run is enough
        return None
    return run_id


def _trigger_outcome_run(session: Any, dag_run: Any, run_id: str, attempt: int, reason: str) -> None:
    """Create the outcome run in `session`, inside a savepoint.

    Not `trigger_dag`: its duplicate check opens (and commits and closes) the thread's scoped
    session, which in the scheduler is the scheduler's own session.
    """
    from airflow._shared.timezones import timezone
    from airflow.models.dagbag import DBDagBag
    from airflow.utils.state import DagRunState
    from airflow.utils.types import DagRunTriggeredByType, DagRunType

    outcomes = DBDagBag().get_latest_version_of_dag(OUTCOMES_DAG_ID, session=session)
    if outcomes is None:
        raise LookupError(f"{OUTCOMES_DAG_ID} is not in the database; is dags/dsbridge_outcomes.py deployed?")
    with session.begin_nested():
        outcomes.create_dagrun(
            run_id=run_id,
            run_after=timezone.utcnow(),
            conf={
                "job": dag_run.dag_id,
                "run_id": dag_run.run_id,
                "attempt": attempt,
                "reason": reason,
                **callback_paths(session, dag_run),
            },
            run_type=DagRunType.OPERATOR_TRIGGERED,
            triggered_by=DagRunTriggeredByType.OPERATOR,
            state=DagRunState.QUEUED,
            session=session,
        )


def ensure_final_event(session: Any, dag_run: Any, reason: str) -> str | None:
    """Start an outcome run for a job run that ended without settling its current attempt."""
    if not is_job_dag(session, dag_run.dag_id):
        return None
    if settled_runs(session, dag_run.dag_id, {dag_run.run_id: attempt_of(dag_run)}):
        return None
    return start_outcome_run(session, dag_run, reason)
