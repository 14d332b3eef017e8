"""Submit a job's notebook to Databricks for one request, exactly once.

A thin layer over the provider's `DatabricksSubmitRunOperator`: it builds the `runs/submit`
payload from the contract and the request (base parameters, S3 output path, compute) and an
idempotency token derived from job and request, so a retried submit gets the same Databricks run
back instead of a second one. The provider's durable mode reconnects a restarted worker to it.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from airflow.providers.databricks.operators.databricks import DatabricksSubmitRunOperator

from dsbridge.contract import JobContract
from dsbridge.contract.params import request_id_for
from dsbridge.outcome import fail_request
from dsbridge.settings import DATABRICKS_CONN_ID, load_settings

# Databricks keeps idempotency tokens of up to 64 characters.
IDEMPOTENCY_TOKEN_LENGTH = 64
# Databricks caps the JSON of a run's base parameters at 1 MB (widgets are strings).
BASE_PARAMETERS_MAX_BYTES = 1_000_000


def idempotency_token(job: str, request_id: str, attempt: int = 0) -> str:
    """Same job + request (+ clear of the DAG run) → same token → same Databricks run."""
    digest = hashlib.sha256(f"{job}\n{request_id}\n{attempt}".encode()).hexdigest()
    return f"dsbridge-{digest}"[:IDEMPOTENCY_TOKEN_LENGTH]


def widget_value(value: Any) -> str:
    """Widgets are strings: strings go as they are, everything else as JSON."""
    if value is None:
        return ""
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True)


def base_parameters(job: str, request_id: str, output_path: str, params: dict[str, Any]) -> dict[str, str]:
    """What the notebook sees as widgets: each parameter, all of them as JSON, and the request."""
    widgets = {name: widget_value(value) for name, value in params.items()}
    widgets.update(
        job=job,
        request_id=request_id,
        output_path=output_path,
        params_json=json.dumps(params, sort_keys=True),
    )
    return widgets


def compute_spec(compute: dict[str, Any]) -> dict[str, Any]:
    """The task-level compute fields: a new cluster, an existing one, or none (serverless)."""
    if "new_cluster" in compute:
        return {"new_cluster": compute["new_cluster"]}
    if "existing_cluster_id" in compute:
        return {"existing_cluster_id": compute["existing_cluster_id"]}
    return {}


def submit_payload(contract: JobContract, request_id: str, params: dict[str, Any], attempt: int = 0) -> dict[str, Any]:
    """The complete `runs/submit` body for one request."""
    settings = load_settings()
    output_path = settings.output_path(contract.name, request_id)
    task = {
        "task_key": contract.name,
        "notebook_task": {
            "notebook_path": contract.notebook_path(settings.workspace_root),
            "source": "WORKSPACE",
            "base_parameters": base_parameters(contract.name, request_id, output_path, params),
        },
        **compute_spec(contract.compute),
    }
    return {
        "run_name": f"dsbridge {contract.name} {request_id}",
        "timeout_seconds": contract.timeout_seconds,
        "idempotency_token": idempotency_token(contract.name, request_id, attempt),
        "tasks": [task],
    }


def request_params(contract: JobContract, conf_params: dict[str, Any]) -> dict[str, Any]:
    """The contract's parameters of this request (Airflow has already validated each value)."""
    return {name: conf_params.get(name) for name in contract.params}


def clear_number(context: Any) -> int:
    """How many times the DAG run was cleared: a cleared run is a new attempt at the request."""
    return int(getattr(context.get("dag_run"), "clear_number", 0) or 0)


class NotebookSubmitRunOperator(DatabricksSubmitRunOperator):
    """Submit `contract`'s notebook for the request of this DAG run; push `run_id` and `request`."""

    def __init__(
        self,
        *,
        contract: JobContract,
        databricks_conn_id: str = DATABRICKS_CONN_ID,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            databricks_conn_id=databricks_conn_id,
            wait_for_termination=False,
            deferrable=False,
            **kwargs,
        )
        self.contract = contract

    def execute(self, context: Any) -> Any:
        dag_run = context["dag_run"]
        conf = dict(dag_run.conf or {})
        params = context["params"]
        unknown = sorted(set(conf) - set(self.contract.params) - {"request_id"})
        if unknown:
            fail_request(
                context,
                f"unknown parameter(s) {unknown} for job {self.contract.name}; allowed: {sorted(self.contract.params)}",
            )
        try:
            request_id = request_id_for(dag_run.run_id, params.get("request_id"))
        except ValueError as exc:
            fail_request(context, str(exc))
        payload = submit_payload(
            self.contract, request_id, request_params(self.contract, params), clear_number(context)
        )
        size = len(json.dumps(payload["tasks"][0]["notebook_task"]["base_parameters"]))
        if size > BASE_PARAMETERS_MAX_BYTES:
            fail_request(context, f"parameters are {size} bytes as JSON; Databricks accepts at most 1 MB")
        self.json = payload
        context["ti"].xcom_push(
            key="request",
            value={
                "request_id": request_id,
                "output_path": payload["tasks"][0]["notebook_task"]["base_parameters"]["output_path"],
                "attempt": clear_number(context),
            },
        )
        self.log.info("Submitting %s for request_id=%s", self.contract.name, request_id)
        try:
            return super().execute(context)
        except Exception as exc:
            # Record why for the failure event; Airflow still retries (the token keeps it one run).
            fail_request(context, f"could not submit the notebook run: {exc}", retryable=True)
