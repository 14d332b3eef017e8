"""The stack on Airflow's CeleryExecutor with two workers (`dsbridge up --executor celery --workers 2`).

Runs in the Celery pass of `make test` (DSBRIDGE_E2E_EXECUTOR=celery), together with
test_requests.py: `dsbridge status` lists each worker, requests spread across both, and a worker
SIGKILLed in the middle of a request still leaves that request with exactly one event.
"""

from __future__ import annotations

import os
import re
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from dsbridge.client import AirflowClient
from dsbridge_local.stack.health import status
from dsbridge_local.stack.stack import StackConfig, recorded_pids
from tests.e2e.conftest import E2E_WORKERS, wait_for_events
from tests.e2e.test_faults import SUCCESS, emulator_faults, outcome, succeeded, wait_for_task

pytestmark = [pytest.mark.e2e, pytest.mark.celery, pytest.mark.timeout(420)]
WORKERS = [f"airflow-worker-{i}" for i in range(1, E2E_WORKERS + 1)]


def executed(stack_config: StackConfig, worker: str) -> str:
    """What `worker` has executed so far: its log's `Executing workload` lines."""
    log = (stack_config.logs / f"{worker}.log").read_text(errors="replace")
    return "\n".join(line for line in log.splitlines() if "Executing workload" in line)


def kill_session(sid: int) -> int:
    """SIGKILL every process of session `sid` (the stack started the worker as its leader): the
    worker, its pool and the task processes it forked, which lead process groups of their own."""
    killed = 0
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if os.getsid(int(entry.name)) == sid:
                    os.kill(int(entry.name), signal.SIGKILL)
                    killed += 1
            except (ProcessLookupError, PermissionError):
                continue
    return killed


def running_on(stack_config: StackConfig, request_id: str, task: str) -> str | None:
    """The worker that took `task` of the request, from the workers' own logs."""
    pattern = re.compile(
        rf"task_id='{task}'.*run_id='{re.escape(request_id)}'|run_id='{re.escape(request_id)}'.*task_id='{task}'"
    )
    for worker in WORKERS:
        if any(pattern.search(line) for line in executed(stack_config, worker).splitlines()):
            return worker
    return None


def test_status_lists_each_worker(stack, stack_config):
    report = status(stack_config)
    for worker in WORKERS:
        assert report["components"][worker]["state"] == "running", report["components"].get(worker)
    assert not report["unhealthy"], report["unhealthy"]


def test_requests_spread_across_both_workers(stack, stack_config, airflow: AirflowClient):
    request_ids = [f"e2e-celery-{i}-{time.monotonic_ns() % 10**8}" for i in range(6)]
    for request_id in request_ids:
        airflow.trigger("sleepy", {"seconds": 1}, request_id)
    for request_id in request_ids:
        assert airflow.wait("sleepy", request_id, timeout=240)["state"] == "success", request_id
        (event,) = wait_for_events(stack, request_id)
        assert event["payload"]["type"] == "request.succeeded"
    took = {worker: sum(rid in executed(stack_config, worker) for rid in request_ids) for worker in WORKERS}
    assert all(took.values()), f"a worker ran none of the requests' tasks: {took}"


def test_a_worker_killed_mid_request_still_ends_it_with_one_event(stack, stack_config, airflow, request_id):
    emulator_faults(stack, {"latency_ms": 4000})  # keeps `submit`'s Databricks call in flight
    try:
        airflow.trigger("sleepy", {"seconds": 1}, request_id)
        wait_for_task(airflow, "sleepy", request_id, "submit", ("running",))
        deadline = time.monotonic() + 30
        while (worker := running_on(stack_config, request_id, "submit")) is None:
            assert time.monotonic() < deadline, "no worker log names the request's submit"
            time.sleep(0.2)
        restarts_before = _restarts(stack_config, worker)
        killed = kill_session(recorded_pids(stack_config)[worker])  # as if its machine died
        assert killed >= 2, killed  # the worker and at least the process running the task
    finally:
        emulator_faults(stack, {"latency_ms": 0})
    result = outcome(stack, airflow, "sleepy", request_id)
    submit = airflow.call("GET", f"/api/v2/dags/sleepy/dagRuns/{request_id}/taskInstances/submit")
    assert succeeded(result), {**result, "expected": SUCCESS}
    assert submit["try_number"] >= 2  # the kill ended a try; Airflow failed it on its heartbeat and retried
    deadline = time.monotonic() + 60
    while _restarts(stack_config, worker) <= restarts_before:
        assert time.monotonic() < deadline, f"the supervisor did not restart {worker}"
        time.sleep(0.5)


def _restarts(stack_config: StackConfig, worker: str) -> int:
    info: dict[str, Any] = status(stack_config)["components"].get(worker, {})
    return int(info.get("restarts", 0))
