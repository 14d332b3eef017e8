"""The DAG factory: one DAG per job contract, all wired the same way.

    submit → wait → collect → notify_success
       └──────┴───────┴────→ notify_failure   (runs only if one of them failed)

Retries with exponential backoff, timeouts and alerting live in `default_args`, never in a task.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from airflow.sdk import DAG, TriggerRule

from dsbridge.contract import JobContract
from dsbridge.contract.params import job_params
from dsbridge.notifiers.log import AlertLogNotifier
from dsbridge.operators.collect import CollectNotebookOutputOperator
from dsbridge.operators.notify import CallbackOperator
from dsbridge.operators.submit import NotebookSubmitRunOperator
from dsbridge.sensors.run_status import DatabricksRunStatusSensor
from dsbridge.settings import load_settings

START_DATE = datetime(2024, 1, 1)
TASK_TIMEOUT = timedelta(minutes=10)
FIRST_RETRY_DELAY = timedelta(seconds=5)
MAX_RETRY_DELAY = timedelta(minutes=30)
# Time after the notebook's own timeout for collecting, notifying and their retries.
RUN_MARGIN = timedelta(minutes=30)
WAIT_MARGIN_SECONDS = 120


def retries_within(horizon: timedelta, first: timedelta = FIRST_RETRY_DELAY, cap: timedelta = MAX_RETRY_DELAY) -> int:
    """How many retries, doubling from `first` up to `cap`, it takes to keep trying for `horizon`."""
    retries, delay, covered = 0, first, timedelta(0)
    while covered < horizon and retries < 1000:
        covered += delay
        delay = min(delay * 2, cap)
        retries += 1
    return max(retries, 2)


def default_args(owner: str, retries: int) -> dict[str, Any]:
    """Retries with exponential backoff (and Airflow's jitter) up to a cap, task timeout, alerts."""
    return {
        "owner": owner,
        "retries": retries,
        "retry_delay": FIRST_RETRY_DELAY,
        "retry_exponential_backoff": 2.0,
        "max_retry_delay": MAX_RETRY_DELAY,
        "execution_timeout": TASK_TIMEOUT,
        "on_failure_callback": [AlertLogNotifier(event="task_failed")],
        "on_retry_callback": [AlertLogNotifier(event="task_retry")],
    }


def _cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def doc_md(contract: JobContract) -> str:
    """The DAG's page in the Airflow UI, generated from the contract."""
    rows = [
        f"| `{name}` | {_cell(schema.get('type', 'enum'))} | "
        f"{'yes' if name in contract.required else 'no'} | "
        f"{_cell(schema['default']) if 'default' in schema else ''} | {_cell(schema.get('description', ''))} |"
        for name, schema in contract.params.items()
    ]
    output = contract.output
    produces = []
    if output.exit_value_schema is not None:
        produces.append("an exit value (`dbutils.notebook.exit`) checked against its JSON Schema")
    if output.result_file:
        produces.append(f"the file `{output.result_file}` under the request's S3 output path")
    return "\n".join(
        [
            f"# {contract.name}",
            "",
            contract.description,
            "",
            f"- **Owner:** {contract.owner}",
            f"- **Notebook:** `notebooks/{contract.name}/{contract.notebook_file.name}` ({contract.language})",
            f"- **Timeout:** {contract.timeout_minutes} min; at most {contract.max_concurrent_requests} "
            "requests run at once (more wait in the queue)",
            f"- **Output:** {' and '.join(produces) or 'an exit value'}",
            f"- **Callback:** `{contract.success_path}` (success), `{contract.failure_path}` (failure)",
            "",
            "## Parameters",
            "",
            "| name | type | required | default | description |",
            "|---|---|---|---|---|",
            *rows,
            "",
            "Trigger with `POST /api/v2/dags/{dag}/dagRuns` and "
            '`{"dag_run_id": "<request id>", "conf": {...}}`; see docs/contract.md.'.replace("{dag}", contract.name),
        ]
    )


def build_job_dag(contract: JobContract) -> DAG:
    """The DAG that serves one notebook job."""
    horizon = load_settings().callback_horizon
    with DAG(
        dag_id=contract.name,
        description=contract.description.splitlines()[0][:200],
        schedule=None,
        start_date=START_DATE,
        catchup=False,
        params=job_params(contract),
        max_active_runs=contract.max_concurrent_requests,
        # Long enough for the notebook, its retries and the whole callback horizon: a timeout stops
        # the run and reports it as failed, which must never overtake a pending success event.
        dagrun_timeout=timedelta(seconds=contract.timeout_seconds) + horizon + RUN_MARGIN,
        default_args=default_args(contract.owner, contract.retries),
        tags=["dsbridge", *contract.tags],
        doc_md=doc_md(contract),
        is_paused_upon_creation=False,
    ) as dag:
        submit = NotebookSubmitRunOperator(
            task_id="submit",
            contract=contract,
            doc_md="Submits the notebook run to Databricks (idempotent per request).",
        )
        wait = DatabricksRunStatusSensor(
            task_id="wait",
            run_id="{{ ti.xcom_pull(task_ids='submit', key='run_id') }}",
            timeout=contract.timeout_seconds + WAIT_MARGIN_SECONDS,
            execution_timeout=timedelta(seconds=contract.timeout_seconds + 2 * WAIT_MARGIN_SECONDS),
            doc_md="Waits in the triggerer for the Databricks run to end; cancels it if killed.",
        )
        collect = CollectNotebookOutputOperator(
            task_id="collect",
            contract=contract,
            doc_md="Reads the exit value / result file and checks it against the output contract.",
        )
        notify_success = CallbackOperator(
            task_id="notify_success",
            outcome="success",
            endpoint=contract.success_path,
            # A callback keeps being retried for the whole horizon (default hours).
            retries=retries_within(horizon),
            doc_md="Sends the signed `request.succeeded` event to the optimization service.",
        )
        notify_failure = CallbackOperator(
            task_id="notify_failure",
            outcome="failure",
            endpoint=contract.failure_path,
            retries=retries_within(horizon),
            trigger_rule=TriggerRule.ONE_FAILED,
            doc_md="Sends the signed `request.failed` / `request.cancelled` event when a step failed.",
        )
        submit >> wait >> collect >> notify_success
        [submit, wait, collect] >> notify_failure
    return dag
