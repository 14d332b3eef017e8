"""The `dsbridge_outcomes` DAG: the final event of job runs whose attempt ended without one.

A caller's cancel (the DAG run marked failed through the REST API), a DAG-run timeout, a run marked
failed or successful by hand, or a delivery cut short leaves a job run without a delivered event.
The outcome listener (or the reconciler) then starts one run of this DAG per job-run attempt, and
its single task delivers the event with the same retries and alerts as any other callback.

Only dsbridge starts it. The service user has no access to it at all (dsbridge's auth managers);
its task refuses any run that dsbridge did not start -- a run of another type, or under another run
id than the one dsbridge derives for the job run's attempt -- and it reads the request from the job
run itself, acting only when that run really ended in the named attempt. (Airflow's
`allowed_run_types` cannot exclude manual runs of an unscheduled DAG, hence the check in the task.)
"""

from __future__ import annotations

from datetime import timedelta

from airflow.sdk import DAG, Param

from dsbridge.dag_factory import NOTIFY_TIMEOUT, START_DATE, default_args, horizon_task_args
from dsbridge.final_events import CANCELLED, MARKED_SUCCESS, OUTCOMES_DAG_ID, TIMED_OUT
from dsbridge.operators.notify import OutcomeCallbackOperator
from dsbridge.settings import load_settings

CALLBACK_PATH_PATTERN = r"^/[A-Za-z0-9._~!$&'()*+,;=:@%/-]{0,255}$"

__all__ = ["OUTCOMES_DAG_ID", "build_outcomes_dag"]


def build_outcomes_dag() -> DAG:
    settings = load_settings()
    with DAG(
        dag_id=OUTCOMES_DAG_ID,
        description="Final callback events of job runs that ended without delivering one.",
        schedule=None,
        start_date=START_DATE,
        catchup=False,
        max_active_runs=64,
        dagrun_timeout=settings.callback_horizon + 2 * NOTIFY_TIMEOUT + timedelta(hours=1),
        tags=["dsbridge", "outcomes"],
        is_paused_upon_creation=False,
        doc_md=__doc__,
        params={
            "job": Param(type="string", pattern=r"^[a-z][a-z0-9_]{0,63}$", description="The job (DAG id)."),
            "run_id": Param(type="string", minLength=1, maxLength=250, description="The job's DAG run id."),
            "attempt": Param(0, type="integer", minimum=0, description="The job run's attempt that ended."),
            "reason": Param(CANCELLED, enum=[CANCELLED, TIMED_OUT, MARKED_SUCCESS], description="How it ended."),
            "success_path": Param(type="string", pattern=CALLBACK_PATH_PATTERN, description="Job's success path."),
            "failure_path": Param(type="string", pattern=CALLBACK_PATH_PATTERN, description="Job's failure path."),
        },
        default_args=default_args("dsbridge", 2),
    ) as dag:
        OutcomeCallbackOperator(
            task_id="notify_outcome",
            execution_timeout=NOTIFY_TIMEOUT,
            **horizon_task_args("callback", settings.callback_horizon, 2),
            doc_md="Sends the signed final event of the job run's attempt (cancelled, timed out, or the pending one).",
        )
    return dag
