"""Exactly one outcome per request, under faults, against the real local stack.

Each scenario breaks one part while a request is in flight, then asserts the final state of the DAG
run, the callbacks by event id and the number of Databricks runs. Every result is also recorded
for docs/reliability.md (written at the end of the session by tests/e2e/conftest.py).
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from dsbridge.client import AirflowClient
from dsbridge.stack.stack import http_ok, recorded_pids, start_component, stop_component, wait_until
from tests.e2e.conftest import databricks_runs, wait_for_events

pytestmark = [pytest.mark.faults, pytest.mark.e2e, pytest.mark.timeout(420)]


def wait_for_task(
    airflow: AirflowClient, job: str, request_id: str, task: str, states: tuple[str, ...], timeout: float = 120
) -> None:
    deadline = time.monotonic() + timeout
    while airflow.task_instances(job, request_id).get(task) not in states:
        assert time.monotonic() < deadline, f"{task} never reached {states}: {airflow.task_instances(job, request_id)}"
        time.sleep(0.3)


def outcome(stack: dict[str, Any], airflow: AirflowClient, job: str, request_id: str) -> dict[str, Any]:
    """What the scenario ended with: run state, events by id and type, deliveries, Databricks runs."""
    run = airflow.wait(job, request_id, timeout=300)
    events = wait_for_events(stack, request_id, timeout=60)
    return {
        "state": run["state"],
        "events": len({e["event_id"] for e in events}),
        "types": sorted(e["payload"]["type"] for e in events),
        "deliveries": sum(e["deliveries"] for e in events),
        "databricks_runs": len(databricks_runs(stack, request_id)),
        "error": (events[0]["payload"]["error"] or {}).get("message") if events else None,
    }


def emulator_faults(stack: dict[str, Any], settings: dict[str, Any]) -> None:
    emulator = stack["emulator"]
    answer = httpx.post(
        f"{emulator['url']}/emulator/faults",
        json=settings,
        headers={"Authorization": f"Bearer {emulator['token']}"},
        timeout=10,
    )
    answer.raise_for_status()


def service_faults(stack: dict[str, Any], settings: dict[str, Any]) -> None:
    httpx.post(f"{stack['service']['url']}/admin/faults", json=settings, timeout=10).raise_for_status()


def task_process(stack_config, ti_id: str) -> int | None:
    """The pid of the task runner of `ti_id` ("airflow worker -- <ti id>") in our scheduler's session.

    The runner leads a process group of its own, but stays in the session the stack gave the
    scheduler, which is how we know it is ours."""
    scheduler = recorded_pids(stack_config)["airflow-scheduler"]
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            title = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
            if title == f"airflow worker -- {ti_id}" and os.getsid(int(entry.name)) == scheduler:
                return int(entry.name)
        except (OSError, UnicodeDecodeError):
            continue
    return None


def ti_id(airflow: AirflowClient, job: str, request_id: str, task: str) -> str:
    return str(airflow.call("GET", f"/api/v2/dags/{job}/dagRuns/{request_id}/taskInstances/{task}")["id"])


SUCCESS = {"state": "success", "events": 1, "types": ["request.succeeded"], "deliveries": 1, "databricks_runs": 1}


def succeeded(result: dict[str, Any]) -> bool:
    return {k: result[k] for k in SUCCESS} == SUCCESS


def test_databricks_429_503_storm(stack, airflow, request_id, reliability):
    emulator_faults(stack, {"rate_429": 0.3, "rate_503": 0.2, "retry_after_s": 1, "seed": 7})
    try:
        airflow.trigger("merchant_threshold", {"merchant_id": "m_storm"}, request_id)
        airflow.wait("merchant_threshold", request_id, timeout=300)
    finally:
        emulator_faults(stack, {"rate_429": 0.0, "rate_503": 0.0})
    result = outcome(stack, airflow, "merchant_threshold", request_id)
    reliability("Databricks answers 30% 429 and 20% 503", "succeeds; one run, one event", result)
    assert succeeded(result), result


def test_callback_receiver_answers_500_then_200(stack, airflow, request_id, reliability):
    service_faults(stack, {"status": 500, "count": 2})
    try:
        airflow.trigger("sleepy", {"seconds": 0}, request_id)
        result = outcome(stack, airflow, "sleepy", request_id)
        tries = airflow.call("GET", f"/api/v2/dags/sleepy/dagRuns/{request_id}/taskInstances/notify_success")
    finally:
        service_faults(stack, {"status": None})
    reliability("callback receiver answers 500 twice, then 200", "delivered on the 3rd try, same event", result)
    assert succeeded(result), result
    assert tries["try_number"] == 3


def test_callback_receiver_down_for_minutes_then_back(stack, stack_config, airflow, request_id, reliability):
    outage_seconds = 120
    stop_component(stack_config, "service")
    down_since = time.monotonic()
    try:
        airflow.trigger("sleepy", {"seconds": 0}, request_id)
        wait_for_task(airflow, "sleepy", request_id, "notify_success", ("up_for_retry",), timeout=180)
        time.sleep(max(0.0, outage_seconds - (time.monotonic() - down_since)))
    finally:
        start_component(stack_config, "service")
        wait_until(lambda: http_ok(f"{stack['service']['url']}/health"), "the service", 60)
    result = outcome(stack, airflow, "sleepy", request_id)
    notify = airflow.call("GET", f"/api/v2/dags/sleepy/dagRuns/{request_id}/taskInstances/notify_success")
    reliability("callback receiver down for 2 minutes, then back", "delivered after it returns; one event", result)
    assert succeeded(result), result
    assert notify["try_number"] >= 4  # 5 s, 10 s, 20 s, 40 s... of backoff spanned the outage


def test_triggerer_killed_while_waiting(stack, stack_config, airflow, request_id, reliability):
    airflow.trigger("sleepy", {"seconds": 8}, request_id)
    wait_for_task(airflow, "sleepy", request_id, "wait", ("deferred",))
    stop_component(stack_config, "airflow-triggerer", hard=True)
    time.sleep(2)
    start_component(stack_config, "airflow-triggerer")
    result = outcome(stack, airflow, "sleepy", request_id)
    reliability("triggerer SIGKILLed while `wait` is deferred", "resumes; one run, one event", result)
    assert succeeded(result), result


def test_scheduler_restarted_while_waiting(stack, stack_config, airflow, request_id, reliability):
    airflow.trigger("sleepy", {"seconds": 6}, request_id)
    wait_for_task(airflow, "sleepy", request_id, "wait", ("deferred",))
    stop_component(stack_config, "airflow-scheduler")
    start_component(stack_config, "airflow-scheduler")
    result = outcome(stack, airflow, "sleepy", request_id)
    reliability("scheduler restarted while `wait` is deferred", "succeeds; one run, one event", result)
    assert succeeded(result), result


def test_worker_killed_during_submit(stack, stack_config, airflow, request_id, reliability):
    emulator_faults(stack, {"latency_ms": 4000})
    try:
        airflow.trigger("sleepy", {"seconds": 1}, request_id)
        kill_task_runner(stack_config, airflow, "sleepy", request_id, "submit")
    finally:
        emulator_faults(stack, {"latency_ms": 0})
    result = outcome(stack, airflow, "sleepy", request_id)
    submit = airflow.call("GET", f"/api/v2/dags/sleepy/dagRuns/{request_id}/taskInstances/submit")
    reliability("worker SIGKILLed during `submit`", "retried; still one Databricks run, one event", result)
    assert succeeded(result), result
    assert submit["try_number"] >= 2  # the kill did end a try


def kill_task_runner(stack_config, airflow: AirflowClient, job: str, request_id: str, task: str) -> None:
    """SIGKILL the process running `task` of this request, as a crashed worker would die."""
    wait_for_task(airflow, job, request_id, task, ("running",))
    task_id = ti_id(airflow, job, request_id, task)
    deadline = time.monotonic() + 30
    while (pid := task_process(stack_config, task_id)) is None:
        assert time.monotonic() < deadline, f"{task}'s task process not found"
        time.sleep(0.1)
    os.kill(pid, signal.SIGKILL)


def test_worker_killed_during_collect(stack, stack_config, airflow, request_id, reliability):
    airflow.trigger("sleepy", {"seconds": 1}, request_id)
    wait_for_task(airflow, "sleepy", request_id, "wait", ("deferred",))
    emulator_faults(stack, {"latency_ms": 4000})  # keeps collect's get-output call in flight
    try:
        kill_task_runner(stack_config, airflow, "sleepy", request_id, "collect")
    finally:
        emulator_faults(stack, {"latency_ms": 0})
    result = outcome(stack, airflow, "sleepy", request_id)
    collect = airflow.call("GET", f"/api/v2/dags/sleepy/dagRuns/{request_id}/taskInstances/collect")
    reliability("worker SIGKILLed during `collect`", "collect retried; one run, one event", result)
    assert succeeded(result), result
    assert collect["try_number"] >= 2  # the kill did end a try


def test_emulator_killed_mid_run(stack, stack_config, airflow, request_id, reliability):
    airflow.trigger("sleepy", {"seconds": 20}, request_id)
    wait_for_task(airflow, "sleepy", request_id, "wait", ("deferred",))
    time.sleep(1)
    stop_component(stack_config, "emulator", hard=True)
    start_component(stack_config, "emulator")
    result = outcome(stack, airflow, "sleepy", request_id)
    reliability("Databricks emulator SIGKILLed mid-run, restarted", "the lost run fails the request: one event", result)
    assert result["state"] == "failed" and result["types"] == ["request.failed"], result
    assert result["databricks_runs"] == 1 and result["deliveries"] == 1


def test_s3_down_during_collect(stack, stack_config, airflow, request_id, reliability):
    airflow.trigger("sleepy", {"seconds": 4}, request_id)
    wait_for_task(airflow, "sleepy", request_id, "wait", ("deferred",))
    stop_component(stack_config, "s3", hard=True)
    try:
        wait_for_task(airflow, "sleepy", request_id, "collect", ("up_for_retry",), timeout=180)
    finally:
        start_component(stack_config, "s3")
        wait_until(lambda: http_ok(f"{stack['s3']['endpoint_url']}/healthz"), "S3", 60)
    result = outcome(stack, airflow, "sleepy", request_id)
    reliability("S3 unavailable during `collect`", "collect retries; one event", result)
    assert succeeded(result), result


def test_notebook_exceeding_its_timeout(stack, airflow, request_id, reliability):
    airflow.trigger("sleepy", {"seconds": 90}, request_id)  # sleepy's contract allows 1 minute
    result = outcome(stack, airflow, "sleepy", request_id)
    reliability("notebook exceeds its timeout", "one request.failed naming the timeout", result)
    assert result["state"] == "failed" and result["types"] == ["request.failed"], result
    assert "timeout" in result["error"] and result["databricks_runs"] == 1


def test_refused_callback_alerts_and_a_cleared_task_resends_the_same_event(stack, airflow, request_id, reliability):
    admin_info = stack["airflow_admin"]
    service_faults(stack, {"status": 400, "count": 1})
    try:
        airflow.trigger("sleepy", {"seconds": 0}, request_id)
        run = airflow.wait("sleepy", request_id, timeout=180)
    finally:
        service_faults(stack, {"status": None})
    assert run["state"] == "failed"
    notify = airflow.call("GET", f"/api/v2/dags/sleepy/dagRuns/{request_id}/taskInstances/notify_success")
    assert notify["state"] == "failed" and notify["try_number"] == 1  # a refusal is not retried
    alerts = Path(stack["alerts_file"]).read_text().splitlines()
    assert any(request_id in line and "notify_success" in line and "refused" in line for line in alerts)
    assert wait_for_events(stack, request_id, timeout=3) == []

    # Ops fix the receiver, then clear the task in the UI (here: the same REST call the UI makes).
    with AirflowClient(stack["airflow"]["url"], admin_info["username"], admin_info["password"]) as admin:
        admin.call(
            "POST",
            "/api/v2/dags/sleepy/clearTaskInstances",
            json={"dry_run": False, "dag_run_id": request_id, "task_ids": ["notify_success"], "only_failed": True},
        )
    result = outcome(stack, airflow, "sleepy", request_id)
    events = wait_for_events(stack, request_id)
    reliability("callback refused with 400; task cleared after the fix", "alert, then one event on resend", result)
    assert succeeded(result), result
    assert events[0]["event_id"] == events[0]["payload"]["event_id"]


def test_signing_secret_never_appears_in_task_logs(stack, stack_config):
    secret = stack["service"]["signing_secret"]
    logs = list((stack_config.state_dir / "airflow" / "logs").rglob("*.log"))
    assert any("notify_success" in str(path) for path in logs)
    assert not [path for path in logs if secret in path.read_text(errors="replace")]


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/api/v2/connections"),
        ("GET", "/api/v2/connections/optimization_service"),
        ("POST", "/api/v2/connections"),
        ("GET", "/api/v2/variables"),
        ("POST", "/api/v2/variables"),
        ("GET", "/api/v2/pools"),
        ("POST", "/api/v2/pools"),
        ("GET", "/api/v2/config"),
    ],
)
def test_service_user_cannot_touch_connections_variables_pools_or_config(airflow, method, path):
    answer = airflow.request(method, path, json={} if method == "POST" else None)
    assert answer.status_code in (401, 403, 404), (method, path, answer.status_code)


def test_caller_cancel_stops_the_notebook_and_gives_one_cancelled_event(stack, airflow, request_id, reliability):
    airflow.trigger("sleepy", {"seconds": 120}, request_id)
    wait_for_task(airflow, "sleepy", request_id, "wait", ("deferred",))

    assert airflow.cancel("sleepy", request_id)["state"] == "failed"

    deadline = time.monotonic() + 60
    while (db_run := databricks_runs(stack, request_id)[0])["state"].get("result_state") != "CANCELED":
        assert time.monotonic() < deadline, f"Databricks run not cancelled: {db_run['state']}"
        time.sleep(0.5)
    result = outcome(stack, airflow, "sleepy", request_id)
    (event,) = wait_for_events(stack, request_id)
    reliability("caller cancels (DAG run marked failed)", "Databricks run cancelled; one request.cancelled", result)
    assert result["state"] == "failed" and result["types"] == ["request.cancelled"], result
    assert result["deliveries"] == 1 and result["databricks_runs"] == 1
    assert event["payload"]["databricks_run_id"] == db_run["run_id"]
    assert event["payload"]["job"] == "sleepy"
