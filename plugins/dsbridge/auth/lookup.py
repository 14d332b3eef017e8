"""What the service policy needs from Airflow's metadata database: the job DAGs and a run's owner.

Job DAGs are asked about on every authorisation (and for every DAG when a list is filtered), so
they are read at most once per TTL; a run's owner and state are read once per cancel.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from dsbridge.final_events import JOB_TAG, OUTCOMES_DAG_ID

JOB_DAGS_TTL_SECONDS = 10.0
# A DAG asked about but not known is looked up again after this long, so a job that was just
# deployed is served at once instead of refused until the cache expires.
MISS_RELOAD_SECONDS = 1.0


def job_dag_ids(tagged: Iterable[str]) -> frozenset[str]:
    """The DAGs tagged `dsbridge`, except the outcomes DAG (only dsbridge itself starts its runs)."""
    return frozenset(tagged) - {OUTCOMES_DAG_ID}


def load_job_dag_ids() -> frozenset[str]:
    from airflow.models.dag import DagTag
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session(scoped=False) as session:
        return job_dag_ids(session.scalars(select(DagTag.dag_id).where(DagTag.name == JOB_TAG)))


class JobDags:
    """The job DAG ids, loaded again when older than `ttl` seconds, or (at most every
    `MISS_RELOAD_SECONDS`) when asked about a DAG they do not hold; safe across threads."""

    def __init__(
        self,
        load: Callable[[], frozenset[str]] = load_job_dag_ids,
        ttl: float = JOB_DAGS_TTL_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._load, self._ttl, self._clock = load, ttl, clock
        self._lock = threading.Lock()
        self._ids: frozenset[str] = frozenset()
        self._expires = float("-inf")
        self._loaded_at = float("-inf")

    def __call__(self, wanted: str | None = None) -> frozenset[str]:
        with self._lock:
            now = self._clock()
            missing = wanted is not None and wanted not in self._ids
            if now >= self._expires or (missing and now - self._loaded_at >= MISS_RELOAD_SECONDS):
                self._ids = self._load()
                self._expires, self._loaded_at = now + self._ttl, now
            return self._ids


@dataclass(frozen=True)
class RunFacts:
    triggered_by: str | None
    state: str | None


def load_run(dag_id: str, run_id: str) -> RunFacts | None:
    """Who triggered the run and its state now, or None if there is no such run."""
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session
    from sqlalchemy import select

    query = select(DagRun.triggering_user_name, DagRun.state).where(DagRun.dag_id == dag_id, DagRun.run_id == run_id)
    with create_session(scoped=False) as session:
        row = session.execute(query).one_or_none()
    return None if row is None else RunFacts(triggered_by=row[0], state=None if row[1] is None else str(row[1]))
