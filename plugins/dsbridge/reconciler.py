"""The reconciler: the sweep that catches every job run the outcome listener missed.

The listener starts an outcome run as a job run ends, but Airflow swallows listener errors and a
process can die between the two. Every `DSBRIDGE_RECONCILE_SECONDS` this sweep looks at the job
runs that ended within the lookback window, starts the outcome run of each whose current attempt
was not settled (no delivered event, no alerted give-up, not a duplicate) and has none yet, and
unpauses `dsbridge_outcomes` when paused outcome runs hold final events back.

It needs Airflow's database, like the scheduler, and runs next to it: `python -m dsbridge.reconciler`
(the local stack starts it; `--once` runs one sweep, e.g. from cron).
"""

from __future__ import annotations

import argparse
import logging
import threading
from datetime import datetime, timedelta
from typing import Any

from dsbridge.final_events import (
    CANCELLED,
    JOB_TAG,
    OUTCOMES_DAG_ID,
    TIMED_OUT,
    attempt_of,
    ensure_outcomes_unpaused,
    reason_of,
    settled_runs,
    start_outcome_run,
)
from dsbridge.settings import load_settings

log = logging.getLogger("dsbridge.reconciler")

DEFAULT_LOOKBACK = timedelta(days=2)
CHUNK = 500


def job_dag_ids(session: Any) -> list[str]:
    from airflow.models.dag import DagTag
    from sqlalchemy import select

    tagged = select(DagTag.dag_id).where(DagTag.name == JOB_TAG, DagTag.dag_id != OUTCOMES_DAG_ID).distinct()
    return sorted(session.scalars(tagged))


def ended_runs(session: Any, dag_ids: list[str], since: datetime) -> list[Any]:
    from airflow.models.dagrun import DagRun
    from sqlalchemy import select

    if not dag_ids:
        return []
    query = select(DagRun).where(
        DagRun.dag_id.in_(dag_ids),
        DagRun.state.in_(("success", "failed")),
        DagRun.end_date >= since,
    )
    return list(session.scalars(query))


def failure_reason(session: Any, dag_run: Any) -> str:
    """A failed run without a settled event either timed out or was stopped from outside."""
    from airflow.models.dagbag import DBDagBag

    try:
        dag = DBDagBag().get_dag_for_run(dag_run, session)
        limit = getattr(dag, "dagrun_timeout", None)
        if limit and dag_run.start_date and dag_run.end_date and dag_run.end_date - dag_run.start_date >= limit:
            return TIMED_OUT
    except Exception:
        log.debug("no DAG for %s %s", dag_run.dag_id, dag_run.run_id, exc_info=True)
    return CANCELLED


def sweep(session: Any, now: datetime | None = None, lookback: timedelta = DEFAULT_LOOKBACK) -> list[str]:
    """One pass; returns the outcome runs it started."""
    from airflow._shared.timezones import timezone

    now = now or timezone.utcnow()
    started: list[str] = []
    runs = ended_runs(session, job_dag_ids(session), now - lookback)
    by_dag: dict[str, list[Any]] = {}
    for run in runs:
        by_dag.setdefault(run.dag_id, []).append(run)
    for dag_id, dag_runs in by_dag.items():
        for at in range(0, len(dag_runs), CHUNK):
            chunk = dag_runs[at : at + CHUNK]
            settled = settled_runs(session, dag_id, {run.run_id: attempt_of(run) for run in chunk})
            for run in chunk:
                if run.run_id in settled:
                    continue
                state = str(getattr(run.state, "value", run.state))
                reason = reason_of(state, "") if state == "success" else failure_reason(session, run)
                if outcome := start_outcome_run(session, run, reason):
                    log.warning(
                        "reconciler: %s %s ended without a final event; started %s", dag_id, run.run_id, outcome
                    )
                    started.append(outcome)
    if _outcome_runs_waiting(session):
        ensure_outcomes_unpaused(session)
    return started


def _outcome_runs_waiting(session: Any) -> bool:
    from airflow.models.dagrun import DagRun
    from sqlalchemy import select

    waiting = select(DagRun.id).where(DagRun.dag_id == OUTCOMES_DAG_ID, DagRun.state.in_(("queued", "running")))
    return session.scalar(waiting.limit(1)) is not None


def run_forever(interval: timedelta, lookback: timedelta, stop: threading.Event | None = None) -> None:
    """Sweep every `interval` until `stop` is set; a failed sweep is logged and the next one tries again."""
    from airflow.utils.session import create_session

    stop = stop or threading.Event()
    log.info("reconciler: sweeping every %s over the last %s", interval, lookback)
    while not stop.is_set():
        try:
            with create_session() as session:
                sweep(session, lookback=lookback)
        except Exception:
            log.exception("reconciler: sweep failed; trying again in %s", interval)
        stop.wait(interval.total_seconds())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m dsbridge.reconciler",
        description="Start the final event of every dsbridge job run that ended without one. "
        "Needs Airflow's database configuration (the scheduler's environment).",
    )
    parser.add_argument("--once", action="store_true", help="run one sweep and exit")
    parser.add_argument(
        "--lookback-hours",
        type=float,
        default=DEFAULT_LOOKBACK.total_seconds() / 3600,
        help="how far back to look at ended job runs (default: %(default)s)",
    )
    args = parser.parse_args(argv)
    if not args.lookback_hours > 0:
        parser.error("--lookback-hours must be positive")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    lookback = timedelta(hours=args.lookback_hours)
    if args.once:
        from airflow.utils.session import create_session

        with create_session() as session:
            started = sweep(session, lookback=lookback)
        print(f"started {len(started)} outcome run(s)")
        return 0
    run_forever(load_settings().reconcile_interval, lookback)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
