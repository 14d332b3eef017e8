"""The usual wiring, for `dsbridge bench` to compare with: never shipped in the product's dags/.

How a team connects a notebook to a caller without dsbridge: the provider's
`DatabricksSubmitRunOperator` with its defaults (it waits in the worker, polling `runs/get` every
`polling_period_seconds` = 30 s), then an `HttpOperator` POST of a hand-signed callback to the
optimization service. It runs the bench's sleeper notebook (benchmarks/jobs/bench_sleep) on the
same emulator, and its callbacks are Standard Webhooks-signed schema v2 events, so the same
receiver counts the callbacks of both paths.

`dsbridge bench` loads this folder as a second Airflow DAG bundle next to the product's dags/.
The DAG is not tagged `dsbridge`: dsbridge's outcome listener and reconciler leave it alone, and
the least-privilege service user cannot trigger it (the bench triggers it as the admin user).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from airflow.providers.databricks.operators.databricks import DatabricksSubmitRunOperator
from airflow.providers.http.operators.http import HttpOperator
from airflow.sdk import DAG, BaseHook, Param, TriggerRule

from dsbridge.callback.event import FAILED, SUCCEEDED, EventType, build_event, encode
from dsbridge.callback.signing import sign_headers

DAG_ID = "bench_sleep_baseline"
NOTEBOOK_PATH = "/bench_sleep/bench_sleep"
CALLBACK_PATH = "/callbacks/dsbridge"
SERVICE_CONN_ID = "optimization_service"


class SignedCallbackOperator(HttpOperator):
    """POST this run's outcome as a signed event; built at run time so the signature is fresh."""

    def __init__(self, *, event_type: EventType, **kwargs: Any) -> None:
        super().__init__(http_conn_id=SERVICE_CONN_ID, endpoint=CALLBACK_PATH, method="POST", **kwargs)
        self.event_type = event_type

    def execute(self, context: Any) -> Any:
        run_id = context["run_id"]
        databricks_run_id = context["ti"].xcom_pull(task_ids="run_notebook", key="run_id")
        failed = self.event_type == FAILED
        event = build_event(
            event_type=self.event_type,
            job=DAG_ID,
            request_id=run_id,
            databricks_run_id=databricks_run_id,
            databricks_run_url=context["ti"].xcom_pull(task_ids="run_notebook", key="run_page_url"),
            error={"code": "notebook_failed", "message": "the notebook run failed"} if failed else None,
        )
        body = encode(event)
        secret = BaseHook.get_connection(SERVICE_CONN_ID).extra_dejson["signing_secret"]
        self.data = body.decode()
        self.headers = {"Content-Type": "application/json", **sign_headers(secret, event["event_id"], body)}
        return super().execute(context)


with DAG(
    dag_id=DAG_ID,
    description="Baseline for `dsbridge bench`: DatabricksSubmitRunOperator (defaults), then a signed HttpOperator.",
    start_date=datetime(2024, 1, 1),
    schedule=None,
    catchup=False,
    # The same admission as the bench job's contract (max_concurrent_requests), so both paths
    # accept the same number of requests at once.
    max_active_runs=200,
    params={"seconds": Param(5, type="number", minimum=0, maximum=1200)},
    tags=["bench", "baseline"],
) as dag:
    run_notebook = DatabricksSubmitRunOperator(
        task_id="run_notebook",
        run_name=f"{DAG_ID} {{{{ run_id }}}}",
        tasks=[
            {
                "task_key": "bench_sleep",
                "notebook_task": {
                    "notebook_path": NOTEBOOK_PATH,
                    "source": "WORKSPACE",
                    "base_parameters": {"seconds": "{{ params.seconds }}"},
                },
            }
        ],
    )
    notify_success = SignedCallbackOperator(task_id="notify_success", event_type=SUCCEEDED)
    notify_failure = SignedCallbackOperator(
        task_id="notify_failure", event_type=FAILED, trigger_rule=TriggerRule.ONE_FAILED
    )
    run_notebook >> [notify_success, notify_failure]
