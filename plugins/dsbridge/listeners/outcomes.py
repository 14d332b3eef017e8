"""Listener that makes sure a job run stopped from outside still ends in one final event.

When a job's DAG run fails without either notify task having run (the caller marked it failed, or
it timed out), this starts one `dsbridge_outcomes` run for it. It runs wherever the state change
happens (the API server or the scheduler) and writes in that same transaction, inside a savepoint,
so the outcome run exists exactly when the failure does; a repeat is refused by its run id.
"""

from __future__ import annotations

import hashlib
import logging
from typing import Any

from airflow.listeners import hookimpl

log = logging.getLogger(__name__)

NOTIFY_TASKS = ("notify_success", "notify_failure")
# A notify task in one of these states has delivered, or tried and raised an alert.
NOTIFY_ATTEMPTED = ("success", "failed")
JOB_TAG = "dsbridge"


def outcome_run_id(job: str, run_id: str, attempt: int) -> str:
    digest = hashlib.sha256(f"{job}\n{run_id}".encode()).hexdigest()[:16]
    return f"{job}__{digest}__{attempt}"


def reason_of(msg: str) -> str:
    return "timed_out" if msg == "timed_out" else "cancelled"


def _is_job_run(dag_run: Any, session: Any) -> bool:
    """A dsbridge job's run (tagged `dsbridge`), not one of the outcomes DAG itself."""
    from airflow.models.dag import DagTag
    from sqlalchemy import select

    from dsbridge.outcomes_dag import OUTCOMES_DAG_ID

    if dag_run.dag_id == OUTCOMES_DAG_ID:
        return False
    tagged = select(DagTag.name).where(DagTag.dag_id == dag_run.dag_id, DagTag.name == JOB_TAG)
    return session.scalar(tagged) is not None


@hookimpl
def on_dag_run_failed(dag_run: Any, msg: str) -> None:
    try:
        _start_outcome_run(dag_run, msg)
    except Exception:
        log.exception("dsbridge: could not start the outcome run of %s %s", dag_run.dag_id, dag_run.run_id)


def _start_outcome_run(dag_run: Any, msg: str) -> None:
    from airflow.api.common.trigger_dag import trigger_dag
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.types import DagRunTriggeredByType
    from sqlalchemy import select
    from sqlalchemy.orm import object_session

    from dsbridge.contract.params import safe_request_id
    from dsbridge.outcomes_dag import OUTCOMES_DAG_ID

    session = object_session(dag_run)
    if session is None:
        log.warning("dsbridge: no session for %s %s; no outcome run", dag_run.dag_id, dag_run.run_id)
        return
    if not _is_job_run(dag_run, session):
        return
    states = dict(
        session.execute(
            select(TaskInstance.task_id, TaskInstance.state).where(
                TaskInstance.dag_id == dag_run.dag_id,
                TaskInstance.run_id == dag_run.run_id,
                TaskInstance.task_id.in_(NOTIFY_TASKS),
            )
        ).all()
    )
    if any(str(state) in NOTIFY_ATTEMPTED for state in states.values()):
        return
    request_id = safe_request_id(dag_run.run_id, (dag_run.conf or {}).get("request_id"))
    attempt = int(getattr(dag_run, "clear_number", 0) or 0)
    run_id = outcome_run_id(dag_run.dag_id, dag_run.run_id, attempt)
    with session.begin_nested():
        trigger_dag(
            OUTCOMES_DAG_ID,
            triggered_by=DagRunTriggeredByType.OPERATOR,
            run_id=run_id,
            conf={
                "job": dag_run.dag_id,
                "run_id": dag_run.run_id,
                "request_id": request_id,
                "attempt": attempt,
                "requested_at": dag_run.start_date.isoformat() if dag_run.start_date else None,
                "reason": reason_of(msg),
            },
            session=session,
        )
    log.info("dsbridge: outcome run %s started for %s %s (%s)", run_id, dag_run.dag_id, dag_run.run_id, msg)
