"""Where the bench reads what happened: Airflow's REST API, the emulator, the service, task logs.

Requests to dsbridge go in as the optimization service's user, the way the service makes them.
The baseline DAG is not a dsbridge job, so the least-privilege service user may not trigger it;
the bench triggers it, and reads runs and task instances of both paths, as the admin user.

Databricks runs are read with `runs/list` (which the emulator does not count against any run), so
reading them does not add to the calls the bench reports. Worker executions come from the task
logs: each worker process that runs a task try, or resumes it after a deferral, opens its part of
the try's log file (`dag_id=…/run_id=…/task_id=…/attempt=N.log`) with the `Pre Execute` group;
the file name already says which request and task it was, with no task-instance ids to map and no
database to read (the triggerer writes to `…attempt=N.log.trigger.*.log`, never that group).
"""

from __future__ import annotations

import re
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx

from dsbridge.client import AirflowClient
from dsbridge.request import run_name
from dsbridge_local.bench.stack import BASELINE_DAG, admin_client

WORKER_START_MARK = "::group::Pre Execute"
ATTEMPT_LOG = re.compile(r"attempt=\d+\.log")
RUNS_PAGE = 25
MAX_RUN_PAGES = 400
PAGE = 100


def databricks_run_name(dag_id: str, request_id: str) -> str:
    """The run name each path gives the Databricks runs of a request (dsbridge's: `run_name`)."""
    return f"{BASELINE_DAG} {request_id}" if dag_id == BASELINE_DAG else run_name(dag_id, request_id)


def count_worker_starts(log_dir: Path) -> int:
    """`Pre Execute` groups across a task's attempt logs (trigger logs excluded)."""
    total = 0
    for log in sorted(log_dir.glob("attempt=*.log")):
        if not ATTEMPT_LOG.fullmatch(log.name):
            continue  # `attempt=N.log.trigger.M.log`: glob's * matches dots too
        with open(log, encoding="utf-8", errors="replace") as handle:
            total += sum(1 for line in handle if WORKER_START_MARK in line)
    return total


class Sources:
    """Clients for everything the bench triggers and reads; close() when done."""

    def __init__(self, stack: dict[str, Any], task_logs: Path) -> None:
        service_user = stack["airflow"]
        self.service_user = AirflowClient(service_user["url"], service_user["username"], service_user["password"])
        self.admin = admin_client(stack)
        self.emulator = httpx.Client(
            base_url=stack["emulator"]["url"],
            headers={"Authorization": f"Bearer {stack['emulator']['token']}"},
            timeout=30.0,
        )
        self.service = httpx.Client(
            base_url=stack["service"]["url"],
            headers={"Authorization": f"Bearer {stack['service']['admin_token']}"},
            timeout=60.0,
        )
        self.stack = stack
        self.task_logs = task_logs
        # Logged in up front, so no request's time includes a login.
        self.service_user.login()
        self.admin.login()

    def close(self) -> None:
        for client in (self.service_user, self.admin):
            client.close()
        self.emulator.close()
        self.service.close()

    # -- requests ---------------------------------------------------------------------------------

    def trigger(self, path: str, dag_id: str, request_id: str, conf: dict[str, Any]) -> datetime:
        """Trigger one request; the time just before the POST (the request's start)."""
        client = self.service_user if path == "dsbridge" else self.admin
        began = datetime.now(UTC)
        client.trigger(dag_id, conf, request_id)
        return began

    def events(self, job: str) -> dict[str, list[dict[str, Any]]]:
        """Every callback event the service kept for `job`, by request id."""
        answer = self.service.get("/events")
        answer.raise_for_status()
        found: dict[str, list[dict[str, Any]]] = {}
        for event in answer.json():
            payload = event.get("payload") or {}
            if payload.get("job") == job:
                found.setdefault(str(payload.get("request_id")), []).append(event)
        return found

    def dag_runs(self, dag_id: str, prefix: str) -> dict[str, dict[str, Any]]:
        """The DAG runs whose id starts with `prefix`, by run id (paged, bounded)."""
        runs: dict[str, dict[str, Any]] = {}
        for page in range(MAX_RUN_PAGES):
            answer = self.admin.call(
                "GET",
                f"/api/v2/dags/{quote(dag_id)}/dagRuns",
                params={"run_id_prefix_pattern": prefix, "limit": PAGE, "offset": page * PAGE, "order_by": "id"},
            )
            for run in answer["dag_runs"]:
                runs[run["dag_run_id"]] = run
            if len(answer["dag_runs"]) < PAGE:
                break
        return runs

    def task_instances(self, dag_id: str, run_id: str) -> list[dict[str, Any]]:
        path = f"/api/v2/dags/{quote(dag_id)}/dagRuns/{quote(run_id, safe='')}/taskInstances"
        return list(self.admin.call("GET", path)["task_instances"])

    def running_task_instances(self, client: AirflowClient) -> int:
        answer = client.call("GET", "/api/v2/dags/~/dagRuns/~/taskInstances", params={"state": "running", "limit": 1})
        return int(answer["total_entries"])

    def databricks_runs(self, since_ms: int) -> dict[str, list[dict[str, Any]]]:
        """Runs created since `since_ms` (with their tasks), by run name; `runs/list` is not counted."""
        by_name: dict[str, list[dict[str, Any]]] = {}
        params: dict[str, Any] = {"start_time_from": since_ms, "expand_tasks": "true", "limit": RUNS_PAGE}
        for _ in range(MAX_RUN_PAGES):
            answer = self.emulator.get("/api/2.2/jobs/runs/list", params=params)
            answer.raise_for_status()
            body = answer.json()
            for run in body.get("runs", []):
                by_name.setdefault(run.get("run_name", ""), []).append(run)
            if not body.get("has_more"):
                break
            params["page_token"] = body["next_page_token"]
        return by_name

    def api_calls(self, run_ids: list[int]) -> dict[str, int]:
        """Jobs API calls made about these runs, summed per endpoint."""
        calls: dict[str, int] = {}
        for run_id in run_ids:
            answer = self.emulator.get("/emulator/stats", params={"run_id": run_id})
            answer.raise_for_status()
            for call, count in answer.json()["calls"].items():
                calls[call] = calls.get(call, 0) + int(count)
        return calls

    def worker_executions(self, dag_id: str, run_id: str, task_ids: list[str]) -> dict[str, int]:
        run_dir = self.task_logs / f"dag_id={dag_id}" / f"run_id={run_id}"
        return {task: count_worker_starts(run_dir / f"task_id={task}") for task in task_ids}


class SlotSampler:
    """Samples how many task instances run at once (each holds a worker slot) every `interval` s.

    A sample is one cheap API call; a task shorter than the interval can fall between two samples.
    """

    def __init__(self, sources: Sources, interval: float = 0.5) -> None:
        self.sources = sources
        self.interval = interval
        self.peak = 0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-slot-sampler", daemon=True)

    def __enter__(self) -> SlotSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _run(self) -> None:
        with admin_client(self.sources.stack) as client:
            while not self._stop.is_set():
                try:
                    self.peak = max(self.peak, self.sources.running_task_instances(client))
                    self.samples += 1
                except (httpx.HTTPError, RuntimeError):
                    pass  # a missed sample; the next one comes an interval later
                self._stop.wait(self.interval)
