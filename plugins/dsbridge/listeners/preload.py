"""Listener that imports what dsbridge's tasks need before Airflow forks its workers.

Every task try and trigger start in a process forked from a long-lived Airflow process (a
LocalExecutor worker forked from the scheduler, a dag-processor or triggerer child). A forked child
inherits the modules its parent had imported, so importing the job DAGs' operators, hooks and
providers once in the parent saves each task process about half a second of CPU -- on a 2-core
machine, a large share of a request's cost (docs/performance.md). `on_starting` runs in every
Airflow job (scheduler, triggerer, dag-processor) before it starts forking; the API server, which
runs no tasks, is not one.
"""

from __future__ import annotations

import importlib
import logging
from typing import Any

from airflow.listeners import hookimpl

log = logging.getLogger(__name__)

PRELOADED = ("dsbridge.dag_factory", "dsbridge.outcomes_dag")


@hookimpl
def on_starting(component: Any) -> None:
    for module in PRELOADED:
        try:
            importlib.import_module(module)
        except Exception:  # a task would import it anyway and report the error where it belongs
            log.warning("dsbridge: could not preload %s", module, exc_info=True)
