"""Least privilege for the optimization service, method by method through the REST API.

The same table runs against the stack's simple auth manager and against a second API server on the
same database with the FAB auth manager (`DsbridgeFabAuthManager`), its users and the shipped role
(`dsbridge auth fab-role`) set up the way docs/security.md tells a production deployment to.
"""

from __future__ import annotations

import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from dsbridge.client import AirflowClient
from dsbridge_local.ports import port_free
from dsbridge_local.stack import airflow as stack_airflow
from dsbridge_local.stack.processes import spawn, stop_group
from dsbridge_local.stack.stack import StackConfig, components, load_secrets, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]

JOB = "sleepy"
OUTCOMES = "dsbridge_outcomes"
FAB_PORT_OFFSET = 15
FAB_MANAGER = "dsbridge.auth.fab.DsbridgeFabAuthManager"
RUN = "/api/v2/dags/{job}/dagRuns/{run}"
TI = RUN + "/taskInstances/submit"
TRIGGER_BODY = {"logical_date": None, "conf": {"seconds": 1}}


@dataclass(frozen=True)
class Call:
    """One REST call; `admin_safe` calls are repeated as the admin, who must not get 403."""

    name: str
    method: str
    path: str
    json: Any = None
    params: dict[str, str] = field(default_factory=dict)
    admin_safe: bool = False

    def send(self, client: AirflowClient, run_id: str) -> int:
        fill = {"job": JOB, "run": run_id}
        return client.request(
            self.method,
            self.path.format(**fill),
            json=_filled(self.json, fill),
            params={k: v.format(**fill) for k, v in self.params.items()},
        ).status_code


def _filled(value: Any, fill: dict[str, str]) -> Any:
    if isinstance(value, str):
        return value.format(**fill)
    if isinstance(value, dict):
        return {k: _filled(v, fill) for k, v in value.items()}
    if isinstance(value, list):
        return [_filled(v, fill) for v in value]
    return value


FORBIDDEN = [
    Call("pause", "PATCH", "/api/v2/dags/{job}", {"is_paused": True}),
    Call("unpause", "PATCH", "/api/v2/dags/{job}", {"is_paused": False}, admin_safe=True),
    Call("pause by pattern", "PATCH", "/api/v2/dags", {"is_paused": True}, {"dag_id_pattern": "{job}"}),
    Call("delete the DAG", "DELETE", "/api/v2/dags/{job}"),
    Call("clear the run", "POST", RUN + "/clear", {"dry_run": True}, admin_safe=True),
    Call(
        "clear task instances",
        "POST",
        "/api/v2/dags/{job}/clearTaskInstances",
        {"dry_run": True, "dag_run_id": "{run}"},
        admin_safe=True,
    ),
    Call("mark the run success", "PATCH", RUN, {"state": "success"}),
    Call("mark the run queued", "PATCH", RUN, {"state": "queued"}),
    Call("edit the run's note", "PATCH", RUN, {"note": "forged"}),
    Call("cancel with a note", "PATCH", RUN, {"state": "failed", "note": "forged"}),
    Call("cancel masked to the note", "PATCH", RUN, {"state": "failed"}, {"update_mask": "note"}),
    Call("cancel with an oversized body", "PATCH", RUN, {"state": "failed", "pad": "x" * 8192}),
    Call(
        "bulk update of runs",
        "PATCH",
        "/api/v2/dags/{job}/dagRuns",
        {"actions": [{"action": "update", "entities": [{"dag_run_id": "{run}", "state": "failed"}]}]},
    ),
    Call("delete the run", "DELETE", RUN),
    Call("wait for the run", "GET", RUN + "/wait", params={"interval": "1"}),
    Call("mark a task instance", "PATCH", TI, {"new_state": "success"}),
    Call("task instance state, dry run", "PATCH", TI + "/dry_run", {"new_state": "success"}, admin_safe=True),
    Call("task instance note", "PATCH", TI, {"note": "forged"}),
    Call("delete a task instance", "DELETE", TI),
    Call("read XComs", "GET", TI + "/xcomEntries", admin_safe=True),
    Call("read an XCom", "GET", TI + "/xcomEntries/return_value", admin_safe=True),
    Call("create an XCom", "POST", TI + "/xcomEntries", {"key": "forged", "value": 1}),
    Call("overwrite an XCom", "PATCH", TI + "/xcomEntries/request", {"value": 1}),
    Call("read the task state store", "GET", TI + "/state-store", admin_safe=True),
    Call("write the task state store", "PUT", TI + "/state-store/forged", {"value": 1}),
    Call("task logs", "GET", TI + "/logs/1", admin_safe=True),
    Call("DAG source", "GET", "/api/v2/dagSources/{job}", admin_safe=True),
    Call("DAG versions", "GET", "/api/v2/dags/{job}/dagVersions", admin_safe=True),
    Call("list every DAG", "GET", "/api/v2/dags", admin_safe=True),
    Call("event log", "GET", "/api/v2/eventLogs", admin_safe=True),
    Call(
        "create a backfill",
        "POST",
        "/api/v2/backfills",
        {"dag_id": "{job}", "from_date": "2024-01-01T00:00:00Z", "to_date": "2024-01-02T00:00:00Z"},
    ),
    Call("list backfills", "GET", "/api/v2/backfills", params={"dag_id": "{job}"}, admin_safe=True),
    Call("assets", "GET", "/api/v2/assets", admin_safe=True),
    Call("pools", "GET", "/api/v2/pools", admin_safe=True),
    Call("create a pool", "POST", "/api/v2/pools", {"name": "forged", "slots": 1}),
    Call("variables", "GET", "/api/v2/variables", admin_safe=True),
    Call("create a variable", "POST", "/api/v2/variables", {"key": "forged", "value": "1"}),
    Call("connections", "GET", "/api/v2/connections", admin_safe=True),
    Call("read a connection", "GET", "/api/v2/connections/optimization_service", admin_safe=True),
    # [api] expose_config is off: the admin is refused too, by configuration.
    Call("config", "GET", "/api/v2/config"),
    Call("trigger dsbridge_outcomes", "POST", f"/api/v2/dags/{OUTCOMES}/dagRuns", TRIGGER_BODY),
    Call("trigger dsbridge_outcomes, encoded id", "POST", "/api/v2/dags/dsbridge%5Foutcomes/dagRuns", TRIGGER_BODY),
    Call("read dsbridge_outcomes", "GET", f"/api/v2/dags/{OUTCOMES}", admin_safe=True),
    Call("read dsbridge_outcomes runs", "GET", f"/api/v2/dags/{OUTCOMES}/dagRuns", admin_safe=True),
    Call("trigger a DAG that is not a job", "POST", "/api/v2/dags/not_a_job/dagRuns", TRIGGER_BODY, admin_safe=True),
]

ALLOWED_READS = [
    "/api/v2/dags/{job}",
    "/api/v2/dags/{job}/details",
    "/api/v2/dags/{job}/dagRuns",
    RUN,
    RUN + "/taskInstances",
    TI,
    "/api/v2/dags/{job}/tasks",
]


@dataclass
class Api:
    """One API server, as the service and as an admin."""

    name: str
    service: AirflowClient
    admin: AirflowClient


# --- the FAB API server ---------------------------------------------------------------------------


def _run(argv: list[str], env: dict[str, str], log: Path, timeout: float = 300.0) -> None:
    with open(log, "ab") as out:
        result = subprocess.run(
            argv, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, timeout=timeout, check=False
        )
    assert result.returncode == 0, f"{' '.join(argv[:4])} failed (exit {result.returncode}); see {log}"


def fab_env(cfg: StackConfig, stack: dict[str, Any], home: Path, port: int) -> dict[str, str]:
    """The stack's API server environment, with the FAB auth manager, its own home, port and keys."""
    env = components(cfg, load_secrets(cfg), stack)["airflow-api-server"].env
    url = f"http://127.0.0.1:{port}"
    return env | {
        "AIRFLOW_HOME": str(home),
        # Task logs are read from the stack's files, as the stack's own API server does.
        "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(cfg.state_dir / "airflow" / "logs"),
        "AIRFLOW__CORE__AUTH_MANAGER": FAB_MANAGER,
        "AIRFLOW__API__PORT": str(port),
        "AIRFLOW__API__BASE_URL": url,
        "AIRFLOW__API__WORKERS": "1",
        "AIRFLOW__API__SECRET_KEY": secrets.token_urlsafe(32),
        "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_urlsafe(32),
    }


def create_fab_user(env: dict[str, str], log: Path, username: str, role: str, password: str) -> None:
    airflow_bin = str(Path(sys.executable).parent / "airflow")
    argv = [airflow_bin, "users", "create", "--username", username, "--role", role, "--password", password]
    argv += ["--firstname", username, "--lastname", "e2e", "--email", f"{username}@example.invalid"]
    _run(argv, env, log)


@pytest.fixture(scope="module")
def fab_server(stack: dict[str, Any], stack_config: StackConfig, tmp_path_factory) -> Iterator[dict[str, str]]:
    """A second API server (FAB) on the e2e database, set up as docs/security.md says; stopped after."""
    port = stack_config.base_port + FAB_PORT_OFFSET
    assert port_free(port), f"port {port} for the FAB API server is taken"
    home = tmp_path_factory.mktemp("fab-airflow")
    env, log = fab_env(stack_config, stack, home, port), home / "fab.log"
    airflow_bin = str(Path(sys.executable).parent / "airflow")
    _run([airflow_bin, "fab-db", "migrate"], env, log)
    # The module form, as an image with the runtime alone runs it (docker-compose.yaml's airflow-init).
    _run([sys.executable, "-m", "dsbridge.auth.fab_role"], env, log)
    passwords = {name: secrets.token_urlsafe(12) for name in (stack_airflow.ADMIN_USER, stack_airflow.SERVICE_USER)}
    create_fab_user(env, log, stack_airflow.ADMIN_USER, "Admin", passwords[stack_airflow.ADMIN_USER])
    create_fab_user(env, log, stack_airflow.SERVICE_USER, "dsbridge_service", passwords[stack_airflow.SERVICE_USER])
    pid = spawn(stack_airflow.component_argv("api-server"), env=env, log_path=log)
    try:
        url = env["AIRFLOW__API__BASE_URL"]
        wait_until(lambda: stack_airflow.health(url) is not None, "the FAB API server", 240, log)
        yield {"url": url, **passwords}
    finally:
        stop_group(pid, grace=20.0)


# --- the two servers as one parameter -------------------------------------------------------------


@pytest.fixture(scope="module", params=["simple", "fab"])
def api(request: pytest.FixtureRequest, stack: dict[str, Any]) -> Iterator[Api]:
    if request.param == "simple":
        url = stack["airflow"]["url"]
        passwords = {
            stack_airflow.SERVICE_USER: stack["airflow"]["password"],
            stack_airflow.ADMIN_USER: stack["airflow_admin"]["password"],
        }
    else:
        fab = request.getfixturevalue("fab_server")
        url, passwords = fab["url"], fab
    service = AirflowClient(url, stack_airflow.SERVICE_USER, passwords[stack_airflow.SERVICE_USER])
    admin = AirflowClient(url, stack_airflow.ADMIN_USER, passwords[stack_airflow.ADMIN_USER])
    with service, admin:
        wait_for_job(service)
        yield Api(request.param, service, admin)


def wait_for_job(service: AirflowClient, timeout: float = 180.0) -> None:
    """Until the job's DAG is parsed and the service's cached view of job DAGs (10 s) includes it."""
    deadline = time.monotonic() + timeout
    while (status := service.request("GET", f"/api/v2/dags/{JOB}").status_code) != 200:
        assert time.monotonic() < deadline, f"{JOB} not readable by the service after {timeout:.0f}s ({status})"
        time.sleep(1.0)


def wait_for_state(client: AirflowClient, run_id: str, states: tuple[str, ...], timeout: float = 90.0) -> str:
    deadline = time.monotonic() + timeout
    while (state := client.run(JOB, run_id)["state"]) not in states:
        assert time.monotonic() < deadline, f"run {run_id} stayed {state}, not {states}"
        time.sleep(0.5)
    return str(state)


def cancel(client: AirflowClient, run_id: str, **params: str) -> int:
    """The caller's cancel (the run marked failed); the answer's status."""
    return client.request("PATCH", RUN.format(job=JOB, run=run_id), json={"state": "failed"}, params=params).status_code


def cancel_if_active(client: AirflowClient, run_id: str) -> None:
    if client.run(JOB, run_id)["state"] in ("queued", "running"):
        cancel(client, run_id)


@pytest.fixture(scope="module")
def service_run(api: Api) -> Iterator[str]:
    """A run the service triggered and that runs while the table is played: a 403 is the policy's."""
    run_id = f"e2e-sec-{api.name}-{secrets.token_hex(4)}"
    api.service.trigger(JOB, {"seconds": 50}, run_id)
    wait_for_state(api.service, run_id, ("running",))
    yield run_id
    cancel_if_active(api.admin, run_id)


# --- the table ------------------------------------------------------------------------------------


@pytest.mark.parametrize("call", FORBIDDEN, ids=[c.name for c in FORBIDDEN])
def test_forbidden_to_the_service(api: Api, service_run: str, call: Call):
    assert call.send(api.service, service_run) == 403


def test_forbidden_calls_left_the_run_alone(api: Api, service_run: str):
    run = api.service.run(JOB, service_run)
    assert run["state"] == "running" and not run.get("note")
    assert api.admin.call("GET", f"/api/v2/dags/{JOB}")["is_paused"] is False


@pytest.mark.parametrize("call", [c for c in FORBIDDEN if c.admin_safe], ids=lambda c: c.name)
def test_the_admin_keeps_access(api: Api, service_run: str, call: Call):
    status = call.send(api.admin, service_run)
    assert status not in (401, 403) and status < 500, status


def test_the_service_triggers_reads_and_cancels_its_own_run(api: Api):
    run_id = f"e2e-sec-own-{secrets.token_hex(4)}"
    assert api.service.trigger(JOB, {"seconds": 60}, run_id)["state"] == "queued"
    for path in ALLOWED_READS:
        assert api.service.request("GET", path.format(job=JOB, run=run_id)).status_code == 200, path
    wait_for_state(api.service, run_id, ("running",))

    assert cancel(api.service, run_id, update_mask="state") == 200
    assert api.service.wait(JOB, run_id, timeout=120)["state"] == "failed"
    # Finished: no second cancel.
    assert cancel(api.service, run_id) == 403


def test_the_service_cannot_cancel_a_run_it_did_not_trigger(api: Api):
    run_id = f"e2e-sec-admin-{secrets.token_hex(4)}"
    api.admin.trigger(JOB, {"seconds": 60}, run_id)
    try:
        wait_for_state(api.admin, run_id, ("running",))
        assert cancel(api.service, run_id) == 403
        assert api.service.run(JOB, run_id)["state"] == "running"
    finally:
        cancel_if_active(api.admin, run_id)


def test_the_service_cannot_forge_an_outcome(api: Api):
    """A `dsbridge_outcomes` run naming another request would send that request's final event."""
    other = f"e2e-sec-other-{secrets.token_hex(4)}"
    conf = {"job": JOB, "run_id": other, "request_id": other, "attempt": 0}
    answer = api.service.request("POST", f"/api/v2/dags/{OUTCOMES}/dagRuns", json={"logical_date": None, "conf": conf})
    assert answer.status_code == 403
