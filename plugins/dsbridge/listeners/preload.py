"""Listener that imports what dsbridge's tasks need before Airflow forks its workers.

Every task try and trigger start in a process forked from a long-lived Airflow process (a
LocalExecutor worker forked from the scheduler, a dag-processor or triggerer child). A forked child
inherits the modules its parent had imported, so importing the job DAGs' operators, hooks and
providers once in the parent saves each task process about half a second of CPU -- on a 2-core
machine, a large share of a request's cost (docs/performance.md). So does parsing botocore's S3
model files once (`dsbridge.s3.warm_s3_models`), which every task that touches S3 needs.

`on_starting` runs in every Airflow job (scheduler, triggerer, dag-processor) before it starts
forking; the API server, which runs no tasks, is not one. Each task process calls it again at its
start, where there is nothing left to gain: it is skipped there.
"""

from __future__ import annotations

import logging
import sys
from importlib import import_module
from typing import Any

from airflow.listeners import hookimpl

log = logging.getLogger(__name__)

PRELOADED = ("dsbridge.dag_factory", "dsbridge.outcomes_dag")


def is_airflow_job(component: Any) -> bool:
    """A scheduler, triggerer or dag-processor -- not a task process, which calls `on_starting` too."""
    job_module = sys.modules.get("airflow.jobs.job")
    return job_module is not None and isinstance(component, job_module.Job)


@hookimpl
def on_starting(component: Any) -> None:
    if not is_airflow_job(component):
        return  # a task process: it inherited all this from its parent, or does without
    for module in PRELOADED:
        try:
            import_module(module)
        except Exception:  # a task would import it anyway and report the error where it belongs
            log.warning("dsbridge: could not preload %s", module, exc_info=True)
    try:
        from dsbridge.s3 import warm_s3_models

        warm_s3_models()
    except Exception:  # only slower: each task parses the models itself
        log.warning("dsbridge: could not warm botocore's S3 models", exc_info=True)
