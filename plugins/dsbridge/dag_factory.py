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
from dsbridge.retry import (
    FIRST_RETRY_DELAY,
    MAX_RETRY_DELAY,
    Horizon,
    HorizonRetryPolicy,
    retries_to_cover,
)
from dsbridge.sensors.run_status import DatabricksRunStatusSensor
from dsbridge.settings import Settings, load_settings

START_DATE = datetime(2024, 1, 1)
TASK_TIMEOUT = timedelta(minutes=10)
NOTIFY_TIMEOUT = timedelta(minutes=5)
WAIT_MARGIN = timedelta(minutes=2)
# Time a ready task may wait for a worker slot, per try, in the worst case we plan for.
SCHEDULING_SLACK = timedelta(minutes=10)
RUN_MARGIN = timedelta(minutes=30)


def default_args(owner: str, retries: int) -> dict[str, Any]:
    """Retries (per-request jitter, horizons for transient failures), task timeout, alerts.

    Tasks that wait out an outage override `retries` and `retry_policy` with their horizon; the
    other retry fields stay as Airflow's fallback (a task whose worker died is retried by Airflow
    without asking the policy).
    """
    return {
        "owner": owner,
        "retries": retries,
        "retry_delay": FIRST_RETRY_DELAY,
        "retry_exponential_backoff": 2.0,
        "max_retry_delay": MAX_RETRY_DELAY,
        "retry_policy": HorizonRetryPolicy("databricks", other_retries=retries),
        "execution_timeout": TASK_TIMEOUT,
        # Under load, finish requests already in flight before starting new ones: a task's priority
        # grows with the steps before it, so notify > collect > submit when worker slots are scarce.
        "weight_rule": "upstream",
        "on_failure_callback": [AlertLogNotifier(event="task_failed")],
        "on_retry_callback": [AlertLogNotifier(event="task_retry")],
    }


def horizon_task_args(kind: Horizon, horizon: timedelta, retries: int) -> dict[str, Any]:
    """A task that keeps retrying a transient failure for `horizon` (its own retries otherwise)."""
    return {"retries": retries_to_cover(horizon), "retry_policy": HorizonRetryPolicy(kind, other_retries=retries)}


def wait_timeout(contract: JobContract, settings: Settings) -> timedelta:
    """The notebook's own timeout, plus a Databricks outage ridden out to its horizon."""
    return timedelta(seconds=contract.timeout_seconds) + settings.databricks_horizon + WAIT_MARGIN


def time_budget(contract: JobContract, settings: Settings) -> dict[str, timedelta]:
    """The longest each step can take when everything that may fail does, within its horizon.

    A horizon task's last try starts by its horizon after its first failure, so it takes at most
    two tries' timeouts plus the horizon; the wait sensor re-defers with a fresh timeout on each of
    its (few) retries. The DAG-run timeout is their sum plus a margin, so it can never overtake a
    pending event.
    """

    def horizon_step(horizon: timedelta, timeout: timedelta) -> timedelta:
        return horizon + 2 * (timeout + SCHEDULING_SLACK)

    return {
        "submit": horizon_step(settings.databricks_horizon, TASK_TIMEOUT),
        "wait": (contract.retries + 1) * (wait_timeout(contract, settings) + WAIT_MARGIN + SCHEDULING_SLACK),
        "collect": horizon_step(settings.collect_horizon, TASK_TIMEOUT),
        "notify": horizon_step(settings.callback_horizon, NOTIFY_TIMEOUT),
        "margin": RUN_MARGIN,
    }


def dagrun_timeout(contract: JobContract, settings: Settings) -> timedelta:
    return sum(time_budget(contract, settings).values(), timedelta(0))


def _cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _expected(contract: JobContract) -> str:
    if contract.expected_minutes is None:
        return "not declared (`expected_minutes`); the run is polled from 0.5 s, growing by half up to 90 s"
    return f"{contract.expected_minutes:g} min; the run is polled at fractions of it"


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
            f"- **Expected duration:** {_expected(contract)}",
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
    settings = load_settings()
    with DAG(
        dag_id=contract.name,
        description=contract.description.splitlines()[0][:200],
        schedule=None,
        start_date=START_DATE,
        catchup=False,
        params=job_params(contract),
        max_active_runs=contract.max_concurrent_requests,
        # A timeout stops the run and reports it failed: it must never overtake a pending event.
        dagrun_timeout=dagrun_timeout(contract, settings),
        default_args=default_args(contract.owner, contract.retries),
        tags=["dsbridge", *contract.tags],
        doc_md=doc_md(contract),
        is_paused_upon_creation=False,
    ) as dag:
        submit = NotebookSubmitRunOperator(
            task_id="submit",
            contract=contract,
            **horizon_task_args("databricks", settings.databricks_horizon, contract.retries),
            doc_md="Claims the request id, then submits the notebook run to Databricks (one live run per request).",
        )
        wait = DatabricksRunStatusSensor(
            task_id="wait",
            # Rendered in the triggerer, whose supervisor answers single-XCom reads only (map_indexes).
            run_id="{{ ti.xcom_pull(task_ids='submit', key='run_id', map_indexes=-1) }}",
            timeout=wait_timeout(contract, settings).total_seconds(),
            expected_seconds=contract.expected_seconds,
            execution_timeout=wait_timeout(contract, settings) + WAIT_MARGIN,
            # Starts and ends in the triggerer: a notebook's failure is final, an outage is ridden
            # out inside the trigger, so there is nothing a retry could do better.
            retries=0,
            doc_md="Waits in the triggerer for the Databricks run to end, through API outages; cancels it if killed.",
        )
        collect = CollectNotebookOutputOperator(
            task_id="collect",
            contract=contract,
            **horizon_task_args("collect", settings.collect_horizon, contract.retries),
            doc_md="Reads the exit value / result file and checks it against the output contract.",
        )
        notify_success = CallbackOperator(
            task_id="notify_success",
            outcome="success",
            endpoint=contract.success_path,
            execution_timeout=NOTIFY_TIMEOUT,
            **horizon_task_args("callback", settings.callback_horizon, contract.retries),
            doc_md="Sends the signed `request.succeeded` event to the optimization service.",
        )
        notify_failure = CallbackOperator(
            task_id="notify_failure",
            outcome="failure",
            endpoint=contract.failure_path,
            trigger_rule=TriggerRule.ONE_FAILED,
            execution_timeout=NOTIFY_TIMEOUT,
            **horizon_task_args("callback", settings.callback_horizon, contract.retries),
            doc_md="Sends the signed `request.failed` / `request.cancelled` event when a step failed.",
        )
        submit >> wait >> collect >> notify_success
        [submit, wait, collect] >> notify_failure
    return dag
