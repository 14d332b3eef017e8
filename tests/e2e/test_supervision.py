"""A stack that heals, or says so, on the real stack.

- A fresh stack on the default database (the embedded PostgreSQL, its own state dir and ports)
  comes up, serves a request with one callback, and goes down.
- The scheduler SIGKILLed mid-request is restarted by the supervisor (new pid, restarts + 1, a
  `component_restarted` alert) and the request still ends `success` with exactly one callback.
- A request accepted while the scheduler is held stopped (`stop_component`) waits queued and
  completes once it is started again (`start_component`).
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path
from typing import Any

import psycopg2
import pytest

from dsbridge.client import AirflowClient
from dsbridge_local.stack import control
from dsbridge_local.stack.processes import alive
from dsbridge_local.stack.stack import (
    StackConfig,
    down,
    recorded_pids,
    running,
    start_component,
    stop_component,
    up,
    wait_until,
)
from tests.e2e.conftest import E2E_BASE_PORT, E2E_SETTINGS, wait_for_events

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]

SCHEDULER = "airflow-scheduler"


def component(cfg: StackConfig, name: str) -> dict[str, Any]:
    return dict((control.read_status(cfg.state_dir) or {})["components"][name])


def wait_for_task(airflow: AirflowClient, job: str, request_id: str, task: str, state: str, timeout: float = 120):
    deadline = time.monotonic() + timeout
    while airflow.task_instances(job, request_id).get(task) != state:
        assert time.monotonic() < deadline, f"{task} never became {state}: {airflow.task_instances(job, request_id)}"
        time.sleep(0.3)


def one_success(stack: dict[str, Any], request_id: str) -> None:
    events = wait_for_events(stack, request_id, timeout=60)
    assert [(e["payload"]["type"], e["deliveries"]) for e in events] == [("request.succeeded", 1)], events


def test_a_fresh_stack_on_the_embedded_postgres_default_serves_a_request(stack_config, tmp_path_factory, request_id):
    cfg = StackConfig(
        state_dir=tmp_path_factory.mktemp("embedded-default") / "state",
        base_port=E2E_BASE_PORT + 50,
        notebooks=stack_config.notebooks,
        settings_env=E2E_SETTINGS,
    )
    assert cfg.database_url is None
    try:
        began = time.monotonic()
        stack = up(cfg)
        print(f"fresh stack on the embedded PostgreSQL up in {time.monotonic() - began:.1f}s")
        assert stack["airflow"]["database"] == "embedded-postgresql"
        assert "postgres" in running(cfg)
        with psycopg2.connect(stack["postgres"]["url"]) as conn, conn.cursor() as cursor:
            cursor.execute("SELECT count(*) FROM alembic_version")  # Airflow migrated it
            assert cursor.fetchone() == (1,)
        conn.close()
        info = stack["airflow"]
        with AirflowClient(info["url"], info["username"], info["password"]) as client:
            client.trigger("sleepy", {"seconds": 1}, request_id)
            assert client.wait("sleepy", request_id, timeout=300)["state"] == "success"
        one_success(stack, request_id)
    finally:
        down(cfg)
    assert running(cfg) == {}
    assert not (cfg.state_dir / "postgres" / "data" / "postmaster.pid").exists()  # a clean shutdown


def test_a_killed_scheduler_is_restarted_and_its_request_completes(stack, stack_config, airflow, request_id):
    before = component(stack_config, SCHEDULER)["restarts"]
    killed = recorded_pids(stack_config)[SCHEDULER]
    airflow.trigger("sleepy", {"seconds": 10}, request_id)
    wait_for_task(airflow, "sleepy", request_id, "wait", "deferred")
    os.kill(killed, signal.SIGKILL)

    def restarted() -> bool:
        pid = recorded_pids(stack_config)[SCHEDULER]
        return pid != killed and alive(pid) and component(stack_config, SCHEDULER)["state"] == "running"

    wait_until(restarted, "the restarted scheduler", 60, stack_config.logs / "supervisor.log")
    now = component(stack_config, SCHEDULER)
    assert (now["restarts"], now["last_exit_code"]) == (before + 1, -9)
    alerts = [json.loads(line) for line in Path(stack["alerts_file"]).read_text().splitlines()]
    assert any(
        a.get("event") == "component_restarted" and a.get("component") == SCHEDULER and a.get("previous_pid") == killed
        for a in alerts
    ), alerts

    assert airflow.wait("sleepy", request_id, timeout=300)["state"] == "success"
    one_success(stack, request_id)


def test_a_request_accepted_while_the_scheduler_is_held_completes_once_it_is_back(
    stack, stack_config, airflow, request_id
):
    stop_component(stack_config, SCHEDULER)
    try:
        assert component(stack_config, SCHEDULER)["state"] == "stopped"
        assert airflow.trigger("sleepy", {"seconds": 1}, request_id)["state"] == "queued"
        time.sleep(5)
        assert airflow.run("sleepy", request_id)["state"] == "queued"
        assert component(stack_config, SCHEDULER)["state"] == "stopped"  # held: not restarted
    finally:
        start_component(stack_config, SCHEDULER)
    assert airflow.wait("sleepy", request_id, timeout=300)["state"] == "success"
    one_success(stack, request_id)
