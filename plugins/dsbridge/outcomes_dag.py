"""The `dsbridge_outcomes` DAG: the final event of job runs that ended before their notify tasks.

A caller's cancel (the DAG run marked failed through the REST API) or a DAG-run timeout stops a job
run where it is, so its own `notify_failure` never runs. The outcome listener then starts one run
of this DAG, in the same database transaction as the state change, and its single task delivers
the `request.cancelled` (or timed-out `request.failed`) event with the same retries and alerts as
any other callback.
"""

from __future__ import annotations

from datetime import timedelta

from airflow.sdk import DAG, Param

from dsbridge.dag_factory import START_DATE, default_args, retries_within
from dsbridge.operators.notify import OutcomeCallbackOperator
from dsbridge.settings import load_settings

OUTCOMES_DAG_ID = "dsbridge_outcomes"


def build_outcomes_dag() -> DAG:
    horizon = load_settings().callback_horizon
    with DAG(
        dag_id=OUTCOMES_DAG_ID,
        description="Final callback events of job runs cancelled by their caller or timed out.",
        schedule=None,
        start_date=START_DATE,
        catchup=False,
        max_active_runs=64,
        dagrun_timeout=horizon + timedelta(hours=1),
        tags=["dsbridge", "outcomes"],
        is_paused_upon_creation=False,
        doc_md=__doc__,
        params={
            "job": Param(type="string", pattern=r"^[a-z][a-z0-9_]{0,63}$", description="The job (DAG id)."),
            "run_id": Param(type="string", minLength=1, maxLength=250, description="The job's DAG run id."),
            "request_id": Param(type="string", minLength=1, maxLength=250, description="The request id."),
            "attempt": Param(0, type="integer", minimum=0, description="How often the job run was cleared."),
            "requested_at": Param(None, type=["null", "string"], description="When the job run started."),
            "reason": Param("cancelled", enum=["cancelled", "timed_out"], description="Why the run ended."),
        },
        default_args=default_args("dsbridge", retries_within(horizon)),
    ) as dag:
        OutcomeCallbackOperator(
            task_id="notify_outcome",
            doc_md="Sends the signed `request.cancelled` / timed-out `request.failed` event of the job run.",
        )
    return dag
