"""Listener that gives a job run ended from outside its final event, as the state changes.

When a job run ends without its notify task having settled the attempt (the caller marked it
failed, it timed out, someone marked it failed or successful by hand), this starts one
`dsbridge_outcomes` run for it. It runs wherever the state change happens (the API server or the
scheduler), right after it, in the same database session. Airflow swallows listener errors, and a
process can die between the state change and the outcome run; the reconciler catches what this
misses (see `dsbridge.reconciler`).
"""

from __future__ import annotations

import logging
from typing import Any

from airflow.listeners import hookimpl

from dsbridge.final_events import ensure_final_event, reason_of

log = logging.getLogger(__name__)


@hookimpl
def on_dag_run_failed(dag_run: Any, msg: str) -> None:
    _settle(dag_run, "failed", msg)


@hookimpl
def on_dag_run_success(dag_run: Any, msg: str) -> None:
    _settle(dag_run, "success", msg)


def _settle(dag_run: Any, state: str, msg: str) -> None:
    from sqlalchemy.orm import object_session

    try:
        session = object_session(dag_run)
        if session is None:
            log.warning("dsbridge: no session for %s %s; the reconciler will see it", dag_run.dag_id, dag_run.run_id)
            return
        started = ensure_final_event(session, dag_run, reason_of(state, msg))
        if started:
            log.info("dsbridge: outcome run %s started for %s %s (%s)", started, dag_run.dag_id, dag_run.run_id, msg)
    except Exception:
        log.exception("dsbridge: could not start the outcome run of %s %s", dag_run.dag_id, dag_run.run_id)
