"""Both auth managers: admins and ops as before, the service held to its policy, during a request."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from airflow.api_fastapi.auth.managers.models.resource_details import (
    AccessView,
    DagAccessEntity,
    DagDetails,
    PoolDetails,
    TeamDetails,
)
from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser
from airflow.api_fastapi.common.types import MenuItem

from dsbridge.auth import service_role
from dsbridge.auth.fab import DsbridgeFabAuthManager
from dsbridge.auth.fab_role import SERVICE_PERMISSIONS, SERVICE_ROLE
from dsbridge.auth.guard import RequestGuard, serving
from dsbridge.auth.lookup import JobDags, RunFacts, job_dag_ids
from dsbridge.auth.manager import DsbridgeAuthManager
from dsbridge.auth.policy import ApiRequest

JOB = "merchant_threshold"
RUN_PATH = f"/api/v2/dags/{JOB}/dagRuns/req-1"
CANCEL = b'{"state": "failed"}'
SERVICE = SimpleAuthManagerUser(username="optimization-service", role="user")
ADMIN = SimpleAuthManagerUser(username="admin", role="admin")
OP = SimpleAuthManagerUser(username="ops", role="op")


@pytest.fixture
def runs(monkeypatch) -> dict[str, RunFacts]:
    """The runs the manager finds, by run id (the DB lookup replaced)."""
    found: dict[str, RunFacts] = {"req-1": RunFacts(triggered_by="optimization-service", state="running")}
    monkeypatch.setattr(service_role, "load_run", lambda dag_id, run_id: found.get(run_id))
    return found


@pytest.fixture
def simple() -> DsbridgeAuthManager:
    manager = DsbridgeAuthManager()
    # What the metadata DB holds: two jobs, the outcomes DAG and an unrelated DAG's tags.
    manager.job_dags = JobDags(load=lambda: job_dag_ids({JOB, "sleepy", "dsbridge_outcomes"}))
    return manager


def dag(manager: Any, user: Any, http: str, path: str, method: str, entity: DagAccessEntity | None, **request: Any):
    dag_id = request.pop("dag_id", JOB)
    with serving(ApiRequest(http, path, **request)):
        return manager.is_authorized_dag(method=method, user=user, access_entity=entity, details=DagDetails(id=dag_id))


@pytest.mark.parametrize(
    ("role", "method", "allowed"),
    [
        ("user", "GET", False),
        ("viewer", "GET", False),
        ("user", "POST", False),
        ("op", "GET", True),
        ("op", "PUT", True),
        ("admin", "GET", True),
    ],
)
def test_pools_and_configuration_need_op(simple, role, method, allowed):
    user = SimpleAuthManagerUser(username="someone", role=role)
    assert simple.is_authorized_pool(method=method, user=user) is allowed
    assert simple.is_authorized_configuration(method=method, user=user) is allowed


def test_the_service_triggers_reads_and_cancels_its_own_running_run(simple, runs):
    assert dag(simple, SERVICE, "POST", f"/api/v2/dags/{JOB}/dagRuns", "POST", DagAccessEntity.RUN)
    assert dag(simple, SERVICE, "GET", RUN_PATH, "GET", DagAccessEntity.RUN)
    assert dag(simple, SERVICE, "GET", f"{RUN_PATH}/taskInstances", "GET", DagAccessEntity.TASK_INSTANCE)
    assert dag(simple, SERVICE, "GET", f"/api/v2/dags/{JOB}", "GET", None)
    assert dag(simple, SERVICE, "PATCH", RUN_PATH, "PUT", DagAccessEntity.RUN, body=CANCEL)
    assert dag(simple, SERVICE, "PATCH", RUN_PATH, "PUT", DagAccessEntity.RUN, body=CANCEL, query="update_mask=state")


@pytest.mark.parametrize(
    ("run", "why"),
    [
        (RunFacts(triggered_by="admin", state="running"), "someone else's run"),
        (RunFacts(triggered_by=None, state="running"), "a scheduled run"),
        (RunFacts(triggered_by="optimization-service", state="failed"), "a finished run"),
        (RunFacts(triggered_by="optimization-service", state="success"), "a finished run"),
        (None, "no such run"),
    ],
)
def test_the_service_cannot_cancel_other_or_finished_runs(simple, runs, run, why):
    runs.pop("req-1")
    if run is not None:
        runs["req-1"] = run
    assert not dag(simple, SERVICE, "PATCH", RUN_PATH, "PUT", DagAccessEntity.RUN, body=CANCEL), why


@pytest.mark.parametrize(
    "body",
    [
        b'{"state": "failed", "note": "x"}',
        b'{"state": "success"}',
        b'{"state": "queued"}',
        b'{"note": "x"}',
        b"not json",
        None,  # oversized: the guard did not record it
    ],
)
def test_hostile_patch_bodies_on_its_own_running_run_are_refused(simple, runs, body):
    assert not dag(simple, SERVICE, "PATCH", RUN_PATH, "PUT", DagAccessEntity.RUN, body=body)


@pytest.mark.parametrize(
    ("http", "path", "method", "entity", "dag_id"),
    [
        ("PATCH", f"/api/v2/dags/{JOB}", "PUT", None, JOB),  # pause / unpause
        ("POST", f"{RUN_PATH}/clear", "PUT", DagAccessEntity.RUN, JOB),
        ("POST", f"/api/v2/dags/{JOB}/clearTaskInstances", "PUT", DagAccessEntity.TASK_INSTANCE, JOB),
        ("PATCH", f"{RUN_PATH}/taskInstances/submit", "PUT", DagAccessEntity.TASK_INSTANCE, JOB),
        ("GET", f"{RUN_PATH}/taskInstances/submit/xcomEntries", "GET", DagAccessEntity.XCOM, JOB),
        ("POST", f"{RUN_PATH}/taskInstances/submit/xcomEntries", "POST", DagAccessEntity.XCOM, JOB),
        ("GET", f"{RUN_PATH}/taskInstances/submit/logs/1", "GET", DagAccessEntity.TASK_LOGS, JOB),
        ("GET", f"/api/v2/dagSources/{JOB}", "GET", DagAccessEntity.CODE, JOB),
        ("DELETE", RUN_PATH, "DELETE", DagAccessEntity.RUN, JOB),
        ("POST", "/api/v2/backfills", "POST", DagAccessEntity.RUN, JOB),
        ("POST", "/api/v2/dags/dsbridge_outcomes/dagRuns", "POST", DagAccessEntity.RUN, "dsbridge_outcomes"),
        ("GET", "/api/v2/dags/dsbridge_outcomes", "GET", None, "dsbridge_outcomes"),
        ("POST", "/api/v2/dags/not_a_job/dagRuns", "POST", DagAccessEntity.RUN, "not_a_job"),
    ],
)
def test_the_service_is_refused_and_the_admin_is_not(simple, runs, http, path, method, entity, dag_id):
    assert not dag(simple, SERVICE, http, path, method, entity, dag_id=dag_id)
    assert dag(simple, ADMIN, http, path, method, entity, dag_id=dag_id)
    assert dag(simple, OP, http, path, method, entity, dag_id=dag_id)


def test_without_a_request_the_service_gets_nothing(simple):
    assert not simple.is_authorized_dag(method="GET", user=SERVICE, details=DagDetails(id=JOB))
    assert not simple.is_authorized_dag(method="POST", user=SERVICE, access_entity=DagAccessEntity.RUN)
    assert simple.is_authorized_dag(method="PUT", user=ADMIN, details=DagDetails(id=JOB))


def test_everything_but_dags_is_closed_to_the_service(simple):
    for user, expected in ((SERVICE, False), (ADMIN, True)):
        assert simple.is_authorized_connection(method="GET", user=user) is expected
        assert simple.is_authorized_variable(method="GET", user=user) is expected
        assert simple.is_authorized_pool(method="GET", user=user, details=PoolDetails(name="default_pool")) is expected
        assert simple.is_authorized_configuration(method="GET", user=user) is expected
        assert simple.is_authorized_asset(method="GET", user=user) is expected
        assert simple.is_authorized_asset_alias(method="GET", user=user) is expected
        assert simple.is_authorized_view(access_view=AccessView.PLUGINS, user=user) is expected
        assert simple.is_authorized_custom_view(method="GET", resource_name="x", user=user) is expected
        assert simple.is_authorized_team(method="GET", user=user, details=TeamDetails(name="t")) is expected
    assert not simple.is_authorized_hitl_task(assigned_users={"optimization-service"}, user=SERVICE)
    assert simple.filter_authorized_menu_items(list(MenuItem), user=SERVICE) == []
    assert simple.filter_authorized_menu_items(list(MenuItem), user=ADMIN) == list(MenuItem)


def test_only_the_job_dag_of_the_route_survives_a_list_filter(simple):
    with serving(ApiRequest("GET", f"{RUN_PATH}/taskInstances")):
        every = {JOB, "sleepy", "dsbridge_outcomes", "other"}
        assert simple.filter_authorized_dag_ids(dag_ids=every, user=SERVICE) == {JOB}
        assert simple.filter_authorized_dag_ids(dag_ids=every, user=ADMIN) == every


def test_the_guard_is_registered():
    assert (RequestGuard, {}) in DsbridgeAuthManager().get_fastapi_middlewares()


def test_job_dags_are_read_again_only_after_the_ttl():
    loads: list[int] = []
    now = [0.0]

    def load() -> frozenset[str]:
        loads.append(1)
        return frozenset({f"job{len(loads)}"})

    job_dags = JobDags(load=load, ttl=10.0, clock=lambda: now[0])
    assert job_dags() == {"job1"}
    now[0] = 9.9
    assert job_dags() == {"job1"}
    now[0] = 10.0
    assert job_dags() == {"job2"}
    assert job_dag_ids({"a", "dsbridge_outcomes"}) == {"a"}


def test_a_just_deployed_job_is_looked_up_again_at_once_but_not_on_every_miss():
    """The API server may be asked before the job's DAG is parsed; it must not refuse it for a TTL."""
    deployed: set[str] = set()
    loads: list[int] = []
    now = [0.0]

    def load() -> frozenset[str]:
        loads.append(1)
        return frozenset(deployed)

    job_dags = JobDags(load=load, ttl=10.0, clock=lambda: now[0])
    assert job_dags("job") == frozenset()  # not parsed yet
    deployed.add("job")
    now[0] = 0.5
    assert job_dags("job") == frozenset() and len(loads) == 1  # misses reload at most every second
    now[0] = 1.0
    assert job_dags("job") == {"job"} and len(loads) == 2
    now[0] = 2.0
    assert job_dags("job") == {"job"} and job_dags("other") == {"job"} and len(loads) == 3


# --- FAB: the policy on top of the role's permissions -------------------------------------------


def fab_user(name: str, roles: list[str], perms: set[tuple[str, str]]) -> Any:
    return SimpleNamespace(
        roles=[SimpleNamespace(name=role) for role in roles], perms=perms, get_name=lambda: name, id=1
    )


ALL_DAG_PERMS = {
    (action, resource)
    for action in ("can_read", "can_edit", "can_create", "can_delete")
    for resource in ("DAGs", "DAG Runs", "Task Instances", "XComs", "Task Logs", "DAG Code")
}


@pytest.fixture
def fab() -> DsbridgeFabAuthManager:
    manager = DsbridgeFabAuthManager()
    manager.job_dags = JobDags(load=lambda: job_dag_ids({JOB, "dsbridge_outcomes"}))
    return manager


def test_fab_service_role_gets_the_policy(fab, runs):
    service = fab_user("optimization-service", [SERVICE_ROLE], set(SERVICE_PERMISSIONS))
    assert dag(fab, service, "POST", f"/api/v2/dags/{JOB}/dagRuns", "POST", DagAccessEntity.RUN)
    assert dag(fab, service, "GET", f"{RUN_PATH}/taskInstances", "GET", DagAccessEntity.TASK_INSTANCE)
    assert dag(fab, service, "PATCH", RUN_PATH, "PUT", DagAccessEntity.RUN, body=CANCEL)
    # can_edit on DAGs would allow pausing and marking runs success; the policy does not.
    assert not dag(fab, service, "PATCH", f"/api/v2/dags/{JOB}", "PUT", None)
    assert not dag(fab, service, "PATCH", RUN_PATH, "PUT", DagAccessEntity.RUN, body=b'{"state": "success"}')
    assert not dag(fab, service, "POST", "/api/v2/dags/dsbridge_outcomes/dagRuns", "POST", DagAccessEntity.RUN)
    assert not fab.is_authorized_pool(method="GET", user=service)
    assert not fab.is_authorized_view(access_view=AccessView.PLUGINS, user=service)


def test_fab_needs_both_the_role_permissions_and_the_policy(fab, runs):
    no_perms = fab_user("optimization-service", [SERVICE_ROLE], set())
    assert not dag(fab, no_perms, "POST", f"/api/v2/dags/{JOB}/dagRuns", "POST", DagAccessEntity.RUN)


def test_fab_other_roles_keep_their_permissions(fab, runs):
    op = fab_user("ops", ["Op"], ALL_DAG_PERMS | {("can_read", "Pools")})
    assert dag(fab, op, "PATCH", f"/api/v2/dags/{JOB}", "PUT", None)
    assert dag(fab, op, "GET", f"{RUN_PATH}/taskInstances/submit/xcomEntries", "GET", DagAccessEntity.XCOM)
    assert fab.is_authorized_pool(method="GET", user=op)
