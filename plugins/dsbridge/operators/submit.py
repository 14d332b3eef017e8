"""Submit a job's notebook to Databricks for one request: claimed once, run at most once at a time.

A thin layer over the provider's `DatabricksSubmitRunOperator` that adds what a request needs:

1. **Identity.** The request id is claimed in S3 (`dsbridge.ledger`) before anything else. Another
   DAG run that reused the id with the same parameters is the same request: it skips and sends
   nothing. With other parameters it is refused (`request_id_conflict`) and touches nothing of the
   first request.
2. **One live run.** The `runs/submit` payload carries an idempotency token derived from job,
   request and attempt, so a retried submit gets the same Databricks run back. A new attempt (a
   clear of the DAG run) first looks for a live run of an earlier attempt -- the ones it recorded,
   and by run name through `runs/list`, which also finds a run whose submit answer was lost -- and
   adopts it instead of starting a second one.
"""

from __future__ import annotations

import base64
import hashlib
import json
import time
from functools import cached_property
from typing import Any

from airflow.providers.databricks.operators.databricks import DatabricksSubmitRunOperator
from airflow.sdk.exceptions import AirflowSkipException

from dsbridge.callback.event import ErrorCode
from dsbridge.contract import JobContract
from dsbridge.deployment import stale_deployment
from dsbridge.ledger import Ownership, RequestLedger
from dsbridge.outcome import fail_request, failing_request_on_error
from dsbridge.request import Request, request_of, run_name
from dsbridge.retry import Transient
from dsbridge.s3 import DsbridgeS3Hook
from dsbridge.settings import AWS_CONN_ID, DATABRICKS_CONN_ID, Settings, load_settings

# Databricks keeps idempotency tokens of up to 64 characters.
IDEMPOTENCY_TOKEN_LENGTH = 64
# Databricks caps the JSON of a run's base parameters at 1 MB (widgets are strings).
BASE_PARAMETERS_MAX_BYTES = 1_000_000
RUNS_LIST_PATH = ("GET", "2.2/jobs/runs/list")
RUNS_LIST_PAGES = 20
WORKSPACE_EXPORT_PATH = ("GET", "2.0/workspace/export")
LIVE_STATES = frozenset({"PENDING", "QUEUED", "RUNNING", "BLOCKED", "WAITING_FOR_RETRY"})
ENDING_STATES = frozenset({"TERMINATING"})
ENDING_WAIT_SECONDS = 120
RUN_KEY = "databricks_run:{attempt}"
# Marks an attempt that needs no event of its own (another DAG run serves the same request).
DUPLICATE_KEY = "duplicate:{attempt}"


def idempotency_token(job: str, request_id: str, attempt: int = 0) -> str:
    """Same job + request + attempt → same token → same Databricks run."""
    digest = hashlib.sha256(f"{job}\n{request_id}\n{attempt}".encode()).hexdigest()
    return f"dsbridge-{digest}"[:IDEMPOTENCY_TOKEN_LENGTH]


def active_runs_named(hook: Any, name: str) -> list[dict[str, Any]]:
    """Active submit runs called `name`, through `runs/list` (bounded paging)."""
    found: list[dict[str, Any]] = []
    params: dict[str, Any] = {"active_only": "true", "run_type": "SUBMIT_RUN", "limit": 25}
    for _ in range(RUNS_LIST_PAGES):
        page = hook._do_api_call(RUNS_LIST_PATH, params)
        found.extend(run for run in page.get("runs", []) if run.get("run_name") == name)
        if not page.get("has_more") or not page.get("next_page_token"):
            break
        params = {**params, "page_token": page["next_page_token"]}
    return found


def exported_notebook(hook: Any, path: str) -> str | None:
    """The source of the workspace notebook at `path` (`workspace/export`), or None if there is none."""
    try:
        answer = hook._do_api_call(WORKSPACE_EXPORT_PATH, {"path": path, "format": "SOURCE"})
    except Exception as exc:
        if "RESOURCE_DOES_NOT_EXIST" in str(exc):
            return None
        raise
    return base64.b64decode(answer.get("content") or "").decode("utf-8", errors="replace")


def life_cycle(run: dict[str, Any]) -> str:
    return str((run.get("state") or {}).get("life_cycle_state", ""))


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


class NotebookSourceError(ValueError):
    """The deployment's notebook source is incomplete; the message names the setting to fix."""


def git_commit(bundle_version: str | None, settings: Settings) -> str:
    """The commit whose notebook runs: the one the DAG run's code came from (a `GitDagBundle`'s
    `bundle_version`), else the deployment's `DSBRIDGE_GIT_COMMIT`."""
    commit = bundle_version or settings.git_commit
    if not commit:
        raise NotebookSourceError(
            "DSBRIDGE_NOTEBOOK_SOURCE=git needs the commit the DAGs were deployed from: use a GitDagBundle "
            "(each DAG run then carries its bundle_version) or set DSBRIDGE_GIT_COMMIT"
        )
    return commit


def notebook_source(contract: JobContract, settings: Settings, bundle_version: str | None) -> dict[str, Any]:
    """The payload fields that say which notebook runs: a workspace path, or a path in a Git commit."""
    if settings.notebook_source != "git":
        return {
            "notebook_task": {"notebook_path": contract.notebook_path(settings.workspace_root), "source": "WORKSPACE"}
        }
    if not settings.git_url:
        raise NotebookSourceError(
            "DSBRIDGE_NOTEBOOK_SOURCE=git needs DSBRIDGE_GIT_URL, the repository Databricks clones"
        )
    folder = f"{settings.git_notebooks_path}/" if settings.git_notebooks_path else ""
    return {
        "git_source": {
            "git_url": settings.git_url,
            "git_provider": settings.git_provider,
            "git_commit": git_commit(bundle_version, settings),
        },
        "notebook_task": {"notebook_path": f"{folder}{contract.name}/{contract.notebook_file.stem}", "source": "GIT"},
    }


def submit_payload(contract: JobContract, request: Request, bundle_version: str | None = None) -> dict[str, Any]:
    """The complete `runs/submit` body for one attempt at a request."""
    source = notebook_source(contract, load_settings(), bundle_version)
    task = {
        "task_key": contract.name,
        "notebook_task": {
            **source["notebook_task"],
            "base_parameters": base_parameters(contract.name, request.request_id, request.output_path, request.params),
        },
        **compute_spec(contract.compute),
    }
    payload: dict[str, Any] = {
        "run_name": run_name(contract.name, request.request_id),
        "timeout_seconds": contract.timeout_seconds,
        "idempotency_token": idempotency_token(contract.name, request.request_id, request.attempt),
        "tasks": [task],
    }
    if "git_source" in source:
        payload["git_source"] = source["git_source"]
    return payload


class NotebookSubmitRunOperator(DatabricksSubmitRunOperator):
    """Submit `contract`'s notebook for the request of this DAG run; push `run_id` and `request`."""

    def __init__(
        self,
        *,
        contract: JobContract,
        databricks_conn_id: str = DATABRICKS_CONN_ID,
        aws_conn_id: str = AWS_CONN_ID,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            databricks_conn_id=databricks_conn_id,
            wait_for_termination=False,
            deferrable=False,
            **kwargs,
        )
        self.contract = contract
        self.aws_conn_id = aws_conn_id

    @cached_property
    def s3_hook(self) -> DsbridgeS3Hook:
        return DsbridgeS3Hook(aws_conn_id=self.aws_conn_id, caller=type(self).__name__)

    def execute(self, context: Any) -> Any:
        try:
            request = request_of(context, self.contract)
        except ValueError as exc:
            fail_request(context, str(exc), code=ErrorCode.INVALID_REQUEST)
        self.log.info("request_id=%s attempt=%d of %s", request.request_id, request.attempt, self.contract.name)
        self._claim(context, request)
        context["ti"].xcom_push(
            key="request",
            value={"request_id": request.request_id, "output_path": request.output_path, "attempt": request.attempt},
        )
        if request.unknown:
            fail_request(
                context,
                f"unknown parameter(s) {list(request.unknown)} for job {self.contract.name}; "
                f"allowed: {sorted(self.contract.params)}",
                code=ErrorCode.INVALID_REQUEST,
            )
        try:
            payload = submit_payload(self.contract, request, getattr(context.get("dag_run"), "bundle_version", None))
        except NotebookSourceError as exc:
            fail_request(context, str(exc), code=ErrorCode.SUBMIT_FAILED)
        if load_settings().notebook_source == "workspace":
            self._check_deployment(context, payload["tasks"][0]["notebook_task"]["notebook_path"])
        size = len(json.dumps(payload["tasks"][0]["notebook_task"]["base_parameters"]))
        if size > BASE_PARAMETERS_MAX_BYTES:
            fail_request(
                context,
                f"parameters are {size} bytes as JSON; Databricks accepts at most 1 MB",
                code=ErrorCode.INVALID_REQUEST,
            )
        with failing_request_on_error(context, "could not submit the notebook run", code=ErrorCode.SUBMIT_FAILED):
            self.run_id = self._live_run(context, request) or self._submit(context, request, payload)
        context["ti"].xcom_push(key="run_id", value=self.run_id)
        return self.run_id

    def _check_deployment(self, context: Any, path: str) -> None:
        """Refuse to run a workspace notebook deployed from another version of the job."""
        with failing_request_on_error(context, "could not read the deployed notebook", code=ErrorCode.SUBMIT_FAILED):
            source = exported_notebook(self._hook, path)
        if (why := stale_deployment(self.contract, path, source)) is not None:
            fail_request(context, why, code=ErrorCode.SUBMIT_FAILED)

    def _claim(self, context: Any, request: Request) -> None:
        """Own the request id, or end this DAG run as a duplicate or a conflict."""
        with failing_request_on_error(context, "could not record the request in S3", code=ErrorCode.SUBMIT_FAILED):
            claim = RequestLedger(self.s3_hook.get_conn(), request.output_path).claim(request)
        if claim.ownership is Ownership.DUPLICATE:
            if (store := context.get("task_state_store")) is not None:
                store.set(DUPLICATE_KEY.format(attempt=request.attempt), claim.holder_run_id)
            raise AirflowSkipException(
                f"request_id {request.request_id!r} with these parameters is already served by DAG run "
                f"{claim.holder_run_id!r}; this run sends nothing (the receiver gets that run's event)"
            )
        if claim.ownership is Ownership.CONFLICT:
            fail_request(
                context,
                f"request_id {request.request_id!r} is already used by DAG run {claim.holder_run_id!r} with other "
                "parameters; nothing was run. Use a new request id for new parameters.",
                code=ErrorCode.REQUEST_ID_CONFLICT,
            )

    def _live_run(self, context: Any, request: Request) -> int | None:
        """A live Databricks run of this request to adopt (one at a time), after ending ones ended."""
        store = context.get("task_state_store")
        recorded = store.get(RUN_KEY.format(attempt=request.attempt)) if store is not None else None
        if recorded:
            return int(recorded)  # a retry of this attempt: the token would return it anyway
        if request.attempt == 0:
            return None
        candidates = active_runs_named(self._hook, run_name(request.job, request.request_id))
        deadline = time.monotonic() + ENDING_WAIT_SECONDS
        while any(life_cycle(run) in ENDING_STATES for run in candidates):
            if time.monotonic() > deadline:
                raise Transient("an earlier run of this request is still terminating; retrying later")
            time.sleep(2)
            candidates = [self._hook.get_run(run["run_id"]) for run in candidates]
        live = sorted((run for run in candidates if life_cycle(run) in LIVE_STATES), key=lambda r: r["run_id"])
        if not live:
            return None
        adopted = int(live[-1]["run_id"])
        for extra in live[:-1]:  # never expected; keep the promise of one live run anyway
            self._hook.cancel_run(int(extra["run_id"]))
        self.log.info("Adopting live Databricks run %s of an earlier attempt", adopted)
        self._remember(context, request, adopted)
        return adopted

    def _submit(self, context: Any, request: Request, payload: dict[str, Any]) -> int:
        self.json = payload
        run_id = int(self._hook.submit_run(self._prepare_submit_json(context)))
        self.log.info("Submitted Databricks run %s for request_id=%s", run_id, request.request_id)
        self._remember(context, request, run_id)
        return run_id

    def _remember(self, context: Any, request: Request, run_id: int) -> None:
        store = context.get("task_state_store")
        if store is not None:
            store.set(RUN_KEY.format(attempt=request.attempt), run_id)
