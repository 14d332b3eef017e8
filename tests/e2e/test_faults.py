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
from dsbridge_local.stack.stack import http_ok, recorded_pids, start_component, stop_component, wait_until
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


def post_settings(url: str, token: str, settings: dict[str, Any]) -> None:
    httpx.post(url, json=settings, headers={"Authorization": f"Bearer {token}"}, timeout=10).raise_for_status()


def emulator_faults(stack: dict[str, Any], settings: dict[str, Any]) -> None:
    post_settings(f"{stack['emulator']['url']}/emulator/faults", stack["emulator"]["token"], settings)


def service_faults(stack: dict[str, Any], settings: dict[str, Any]) -> None:
    post_settings(f"{stack['service']['url']}/admin/faults", stack["service"]["admin_token"], settings)


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


def test_s3_down_for_minutes_during_collect(stack, stack_config, airflow, request_id, reliability):
    outage_seconds = 180
    airflow.trigger("sleepy", {"seconds": 4}, request_id)
    wait_for_task(airflow, "sleepy", request_id, "wait", ("deferred",))
    stop_component(stack_config, "s3", hard=True)
    down_since = time.monotonic()
    try:
        wait_for_task(airflow, "sleepy", request_id, "collect", ("up_for_retry",), timeout=180)
        time.sleep(max(0.0, outage_seconds - (time.monotonic() - down_since)))
    finally:
        start_component(stack_config, "s3")
        wait_until(lambda: http_ok(f"{stack['s3']['endpoint_url']}/healthz"), "S3", 60)
    result = outcome(stack, airflow, "sleepy", request_id)
    collect = airflow.call("GET", f"/api/v2/dags/sleepy/dagRuns/{request_id}/taskInstances/collect")
    reliability("S3 down for 3 minutes during `collect`", "collect rides it out within its horizon; one event", result)
    assert succeeded(result), result
    assert collect["try_number"] >= 3


def test_databricks_down_for_minutes_mid_wait(stack, airflow, request_id, reliability):
    """Every Databricks call answers 503 for 3 minutes while the notebook runs and ends."""
    airflow.trigger("sleepy", {"seconds": 30}, request_id)
    wait_for_task(airflow, "sleepy", request_id, "wait", ("deferred",))
    emulator_faults(stack, {"rate_503": 1.0, "retry_after_s": 1})
    try:
        time.sleep(180)
        assert airflow.task_instances("sleepy", request_id)["wait"] == "deferred"  # still following the run
    finally:
        emulator_faults(stack, {"rate_503": 0.0})
    result = outcome(stack, airflow, "sleepy", request_id)
    reliability("Databricks API down (503) for 3 minutes mid-wait", "the wait rides it out; one event", result)
    assert succeeded(result), result
    assert databricks_runs(stack, request_id)[0]["state"]["result_state"] == "SUCCESS"


def test_triggerer_killed_while_databricks_is_unreachable(stack, stack_config, airflow, request_id, reliability):
    airflow.trigger("sleepy", {"seconds": 20}, request_id)
    wait_for_task(airflow, "sleepy", request_id, "wait", ("deferred",))
    emulator_faults(stack, {"rate_503": 1.0, "retry_after_s": 1})
    try:
        time.sleep(5)
        stop_component(stack_config, "airflow-triggerer", hard=True)
        time.sleep(3)
        start_component(stack_config, "airflow-triggerer")
        time.sleep(40)
    finally:
        emulator_faults(stack, {"rate_503": 0.0})
    result = outcome(stack, airflow, "sleepy", request_id)
    reliability("triggerer SIGKILLed while Databricks answers 503", "the notebook is not cancelled; one event", result)
    assert succeeded(result), result
    assert databricks_runs(stack, request_id)[0]["state"]["result_state"] == "SUCCESS"


def s3_client(stack: dict[str, Any]) -> Any:
    import boto3

    s3 = stack["s3"]
    return boto3.client(
        "s3",
        endpoint_url=s3["endpoint_url"],
        aws_access_key_id=s3["access_key_id"],
        aws_secret_access_key=s3["secret_access_key"],
        region_name=s3["region"],
    )


def ledger_events(stack: dict[str, Any], job: str, request_id: str) -> dict[str, bytes]:
    """The events dsbridge recorded for the request in S3, by event id."""
    s3, bucket = s3_client(stack), stack["s3"]["bucket"]
    prefix = f"runs/{job}/{request_id}/_dsbridge/events/"
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", [])]
    return {
        key.rsplit("-", 1)[-1].removesuffix(".json"): s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        for key in keys
    }


def test_clear_collect_after_a_failure_sends_one_superseding_success(stack, airflow, admin, request_id, reliability):
    airflow.trigger("answer", {"answer": "forty-two"}, request_id)
    assert airflow.wait("answer", request_id, timeout=180)["state"] == "failed"
    (failed,) = wait_for_events(stack, request_id)
    assert failed["payload"]["error"]["code"] == "output_invalid"

    # Ops repair the data and clear `collect` (here: the same REST call the UI makes).
    key = f"runs/answer/{request_id}/answer.json"
    s3_client(stack).put_object(Bucket=stack["s3"]["bucket"], Key=key, Body=b'{"answer": 42}')
    admin.call(
        "POST",
        "/api/v2/dags/answer/clearTaskInstances",
        json={"dry_run": False, "dag_run_id": request_id, "task_ids": ["collect"], "include_downstream": True},
    )
    result = outcome(stack, airflow, "answer", request_id)
    events = {e["payload"]["type"]: e for e in wait_for_events(stack, request_id)}
    reliability(
        "`collect` cleared after a `request.failed`", "a new attempt: one superseding request.succeeded", result
    )
    assert result["state"] == "success" and result["types"] == ["request.failed", "request.succeeded"], result
    assert result["deliveries"] == 2 and result["databricks_runs"] == 1
    succeeded_event = events["request.succeeded"]["payload"]
    assert (succeeded_event["attempt"], succeeded_event["sequence"]) == (1, 2)
    assert succeeded_event["supersedes"] == failed["event_id"]
    assert succeeded_event["result"] == {"answer": 42}
    # Each delivery carried its own event's bytes, the ones dsbridge recorded for it.
    recorded = ledger_events(stack, "answer", request_id)
    assert {e["event_id"]: e["body"].encode() for e in events.values()} == recorded


def test_clear_after_a_lost_submit_answer_adopts_the_orphan_run(
    stack, stack_config, airflow, admin, request_id, reliability
):
    """The run was created but its answer never reached the worker; ops clear the request."""
    emulator_faults(stack, {"submit_answer_delay_ms": 60000})
    try:
        airflow.trigger("sleepy", {"seconds": 40}, request_id)  # still running when the clear comes
        deadline = time.monotonic() + 120
        while not databricks_runs(stack, request_id):
            assert time.monotonic() < deadline, "the run was never created"
            time.sleep(0.5)
        kill_task_runner(stack_config, airflow, "sleepy", request_id, "submit")
        # Clear once Airflow has recorded the lost try (before its own retry starts, seconds later).
        wait_for_task(airflow, "sleepy", request_id, "submit", ("up_for_retry", "failed"), timeout=60)
        admin.call(
            "POST",
            "/api/v2/dags/sleepy/clearTaskInstances",
            json={
                "dry_run": False,
                "dag_run_id": request_id,
                "task_ids": ["submit"],
                "include_downstream": True,
                "only_failed": False,  # up_for_retry counts as not failed
            },
        )
    finally:
        emulator_faults(stack, {"submit_answer_delay_ms": 0})
    result = outcome(stack, airflow, "sleepy", request_id)
    (event,) = wait_for_events(stack, request_id)
    (orphan,) = databricks_runs(stack, request_id)
    reliability("submit answer lost, then the request cleared", "the live run is adopted: no orphan, one event", result)
    assert succeeded(result), result
    assert event["payload"]["databricks_run_id"] == orphan["run_id"]
    assert event["payload"]["attempt"] >= 1


def test_run_marked_success_by_hand_mid_notebook(stack, airflow, admin, request_id, reliability):
    airflow.trigger("sleepy", {"seconds": 50}, request_id)
    wait_for_task(airflow, "sleepy", request_id, "wait", ("deferred",))
    admin.call("PATCH", f"/api/v2/dags/sleepy/dagRuns/{request_id}", json={"state": "success"})
    result = outcome(stack, airflow, "sleepy", request_id)
    (event,) = wait_for_events(stack, request_id)
    reliability(
        "run marked success by hand while the notebook runs", "one request.cancelled (no result); run cancelled", result
    )
    assert result["state"] == "success" and result["types"] == ["request.cancelled"], result
    assert result["deliveries"] == 1 and event["payload"]["error"]["code"] == "stopped_without_result"
    deadline = time.monotonic() + 60
    while databricks_runs(stack, request_id)[0]["state"].get("result_state") != "CANCELED":
        assert time.monotonic() < deadline, "the notebook was not cancelled"
        time.sleep(0.5)


def test_a_paused_outcomes_dag_still_delivers(stack, airflow, admin, request_id, reliability):
    admin.call("PATCH", "/api/v2/dags/dsbridge_outcomes", json={"is_paused": True})
    airflow.trigger("sleepy", {"seconds": 50}, request_id)
    wait_for_task(airflow, "sleepy", request_id, "wait", ("deferred",))
    airflow.cancel("sleepy", request_id)
    result = outcome(stack, airflow, "sleepy", request_id)
    reliability("`dsbridge_outcomes` paused, then a caller cancels", "unpaused with an alert; one event", result)
    assert result["state"] == "failed" and result["types"] == ["request.cancelled"], result
    assert admin.call("GET", "/api/v2/dags/dsbridge_outcomes")["is_paused"] is False
    assert any('"outcomes_unpaused"' in line for line in Path(stack["alerts_file"]).read_text().splitlines())


def test_the_reconciler_gives_an_event_to_a_run_the_listener_never_saw(
    stack, stack_config, airflow, admin, request_id, reliability
):
    """A state change that bypasses Airflow (and so its listeners): only the reconciler can notice."""
    import psycopg2

    from tests.e2e.conftest import E2E_DATABASE

    admin.call("PATCH", "/api/v2/dags/sleepy", json={"is_paused": True})
    try:
        airflow.trigger("sleepy", {"seconds": 1}, request_id)
        conn = psycopg2.connect(f"host=127.0.0.1 port=5432 user=postgres dbname={E2E_DATABASE}")
        try:
            with conn, conn.cursor() as cursor:
                cursor.execute(
                    "UPDATE dag_run SET state = 'failed', start_date = now(), end_date = now() "
                    "WHERE dag_id = 'sleepy' AND run_id = %s",
                    (request_id,),
                )
        finally:
            conn.close()
    finally:
        admin.call("PATCH", "/api/v2/dags/sleepy", json={"is_paused": False})
    result = outcome(stack, airflow, "sleepy", request_id)
    reliability("a run ended behind Airflow's back (no listener)", "the reconciler sends its one event", result)
    assert result["state"] == "failed" and result["types"] == ["request.cancelled"], result
    assert result["deliveries"] == 1 and result["databricks_runs"] == 0
    assert "ended without a final event" in (stack_config.logs / "reconciler.log").read_text()


def test_notebook_exceeding_its_timeout(stack, airflow, request_id, reliability):
    airflow.trigger("sleepy", {"seconds": 90}, request_id)  # sleepy's contract allows 1 minute
    result = outcome(stack, airflow, "sleepy", request_id)
    reliability("notebook exceeds its timeout", "one request.failed naming the timeout", result)
    assert result["state"] == "failed" and result["types"] == ["request.failed"], result
    assert "timeout" in result["error"] and result["databricks_runs"] == 1


def test_refused_callback_alerts_and_a_cleared_task_sends_a_superseding_event(
    stack, airflow, admin, request_id, reliability
):
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
    (refused_id,) = ledger_events(stack, "sleepy", request_id)  # built, recorded, never delivered

    # Ops fix the receiver, then clear the task in the UI (here: the same REST call the UI makes).
    admin.call(
        "POST",
        "/api/v2/dags/sleepy/clearTaskInstances",
        json={"dry_run": False, "dag_run_id": request_id, "task_ids": ["notify_success"], "only_failed": True},
    )
    result = outcome(stack, airflow, "sleepy", request_id)
    (event,) = wait_for_events(stack, request_id)
    reliability("callback refused with 400; task cleared after the fix", "alert, then one superseding event", result)
    assert succeeded(result), result
    assert event["payload"]["attempt"] == 1 and event["payload"]["supersedes"] == refused_id


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
