"""The service policy, call by call: what Airflow asks, during which request, and the answer."""

from __future__ import annotations

from typing import Any

import pytest

from dsbridge.auth.policy import (
    ALLOW,
    DENY,
    ApiRequest,
    Decision,
    Route,
    decide,
    is_cancel_body,
    is_cancel_query,
    may_cancel,
    records_body,
    route_of,
)

JOB = "merchant_threshold"
JOBS = frozenset({JOB, "sleepy"})
RUN_PATH = f"/api/v2/dags/{JOB}/dagRuns/req-1"
CANCEL = b'{"state": "failed"}'


def ask(http: str, path: str, method: str, entity: str | None, dag: str | None = JOB, **request: Any) -> Decision:
    return decide(
        method=method,
        entity=entity,
        dag_id=dag,
        request=ApiRequest(http, path, **request),
        job_dags=JOBS,
    )


@pytest.mark.parametrize(
    ("http", "path", "method", "entity"),
    [
        ("POST", f"/api/v2/dags/{JOB}/dagRuns", "POST", "RUN"),
        ("GET", f"/api/v2/dags/{JOB}", "GET", None),
        ("GET", f"/api/v2/dags/{JOB}/details", "GET", None),
        ("GET", f"/api/v2/dags/{JOB}/dagRuns", "GET", "RUN"),
        ("GET", RUN_PATH, "GET", "RUN"),
        ("GET", f"{RUN_PATH}/taskInstances", "GET", "TASK_INSTANCE"),
        ("GET", f"{RUN_PATH}/taskInstances", "GET", None),  # the list's permitted-DAG filter
        ("GET", f"{RUN_PATH}/taskInstances/submit", "GET", "TASK_INSTANCE"),
        ("GET", f"{RUN_PATH}/taskInstances/submit/-1", "GET", "TASK_INSTANCE"),
        ("GET", f"/api/v2/dags/{JOB}/tasks", "GET", "TASK"),
        ("GET", f"/api/v2/dags/{JOB}/tasks/submit", "GET", "TASK"),
    ],
)
def test_trigger_and_reads_of_a_job_dag_are_allowed(http, path, method, entity):
    assert ask(http, path, method, entity) == ALLOW


@pytest.mark.parametrize(
    ("name", "http", "path", "method", "entity"),
    [
        ("pause or unpause", "PATCH", f"/api/v2/dags/{JOB}", "PUT", None),
        ("pause every DAG", "PATCH", "/api/v2/dags", "PUT", None),
        ("delete the DAG", "DELETE", f"/api/v2/dags/{JOB}", "DELETE", None),
        ("favorite (a POST asking GET)", "POST", f"/api/v2/dags/{JOB}/favorite", "GET", None),
        ("clear a run", "POST", f"{RUN_PATH}/clear", "PUT", "RUN"),
        ("clear partitions", "POST", f"/api/v2/dags/{JOB}/clearPartitions", "PUT", "RUN"),
        ("bulk runs", "PATCH", f"/api/v2/dags/{JOB}/dagRuns", "PUT", "RUN"),
        ("delete a run", "DELETE", RUN_PATH, "DELETE", "RUN"),
        ("wait for a run", "GET", f"{RUN_PATH}/wait", "GET", "RUN"),
        ("backfill create (POST on RUN)", "POST", "/api/v2/backfills", "POST", "RUN"),
        ("backfill list", "GET", "/api/v2/backfills", "GET", "RUN"),
        ("clear task instances", "POST", f"/api/v2/dags/{JOB}/clearTaskInstances", "PUT", "TASK_INSTANCE"),
        ("task instance state", "PATCH", f"{RUN_PATH}/taskInstances/submit", "PUT", "TASK_INSTANCE"),
        ("task instance tries", "GET", f"{RUN_PATH}/taskInstances/submit/tries", "GET", "TASK_INSTANCE"),
        ("state store read", "GET", f"{RUN_PATH}/taskInstances/submit/state-store", "GET", "TASK_INSTANCE"),
        ("state store write", "PUT", f"{RUN_PATH}/taskInstances/submit/state-store/k", "PUT", "TASK_INSTANCE"),
        ("xcom read", "GET", f"{RUN_PATH}/taskInstances/submit/xcomEntries", "GET", "XCOM"),
        ("xcom write", "POST", f"{RUN_PATH}/taskInstances/submit/xcomEntries", "POST", "XCOM"),
        ("logs", "GET", f"{RUN_PATH}/taskInstances/submit/logs/1", "GET", "TASK_LOGS"),
        ("code", "GET", f"/api/v2/dagSources/{JOB}", "GET", "CODE"),
        ("versions", "GET", f"/api/v2/dags/{JOB}/dagVersions", "GET", "VERSION"),
        ("audit log", "GET", "/api/v2/eventLogs", "GET", "AUDIT_LOG"),
        ("HITL", "GET", f"{RUN_PATH}/hitlDetails", "GET", "HITL_DETAIL"),
        ("a read asking about logs on a read route", "GET", RUN_PATH, "GET", "TASK_LOGS"),
        ("a trigger asking PUT", "POST", f"/api/v2/dags/{JOB}/dagRuns", "PUT", "RUN"),
        ("HEAD", "HEAD", RUN_PATH, "GET", "RUN"),
        ("the UI", "GET", f"/ui/grid/runs/{JOB}", "GET", "RUN"),
        ("trailing slash", "GET", f"{RUN_PATH}/", "GET", "RUN"),
    ],
)
def test_everything_else_on_a_job_dag_is_refused(name, http, path, method, entity):
    assert ask(http, path, method, entity) == DENY, name


@pytest.mark.parametrize(
    ("path", "dag"),
    [
        ("/api/v2/dags/dsbridge_outcomes/dagRuns", "dsbridge_outcomes"),
        ("/api/v2/dags/some_other_dag/dagRuns", "some_other_dag"),
        # The route names one DAG, the question another.
        (f"/api/v2/dags/{JOB}/dagRuns", "dsbridge_outcomes"),
        ("/api/v2/dags/dsbridge_outcomes/dagRuns", JOB),
        # Traversal and decoded separators: not one of the service's routes.
        (f"/api/v2/dags/{JOB}/../dsbridge_outcomes/dagRuns", JOB),
        (f"/api/v2/dags/{JOB}/dagRuns/../../dsbridge_outcomes/dagRuns", JOB),
        (f"/api/v2/dags/{JOB}/x/dagRuns", JOB),
        ("/api/v2/dags/~/dagRuns", "~"),
    ],
)
def test_only_job_dags_named_by_the_route_itself(path, dag):
    assert ask("POST", path, "POST", "RUN", dag=dag) == DENY


def test_no_request_or_no_dag_is_refused():
    assert decide(method="GET", entity=None, dag_id=JOB, request=None, job_dags=JOBS) == DENY
    assert ask("GET", "/api/v2/dags", "GET", None, dag=None) == DENY


def test_a_cancel_names_the_run_and_waits_for_its_owner():
    decision = ask("PATCH", RUN_PATH, "PUT", "RUN", body=CANCEL)
    assert decision == Decision(False, cancel_run="req-1")
    assert ask("PATCH", RUN_PATH, "PUT", "RUN", body=CANCEL, query="update_mask=state").cancel_run == "req-1"


@pytest.mark.parametrize(
    ("body", "query"),
    [
        (b'{"state": "failed", "note": "x"}', ""),
        (b'{"state": "success"}', ""),
        (b'{"state": "queued"}', ""),
        (b'{"note": "x"}', ""),
        (None, ""),  # not recorded: too large
        (b"state=failed", ""),
        (CANCEL, "update_mask=note"),
        (CANCEL, "update_mask=state&update_mask=note"),
    ],
)
def test_anything_but_an_exact_cancel_on_a_run_is_refused(body, query):
    assert ask("PATCH", RUN_PATH, "PUT", "RUN", body=body, query=query) == DENY


@pytest.mark.parametrize(
    "body",
    [
        b'{"state":"failed"}',
        b'  {"state" : "failed"}\n',
        '{"state": "failed"}'.encode("utf-16"),  # json.loads reads UTF-16 bytes, and so does FastAPI
    ],
)
def test_cancel_bodies(body):
    assert is_cancel_body(body)


@pytest.mark.parametrize(
    "body",
    [
        None,
        b"",
        b"not json",
        b"\xff\xfe\x00garbage",
        b'["state", "failed"]',
        b'"failed"',
        b'{"state": "FAILED"}',
        b'{"state": ["failed"]}',
        b'{"state": "failed", "note": "x"}',
        b'{"state": "success", "state": "failed"}',  # duplicate keys: parsers may disagree
        b'{"state": "failed", "state": "failed"}',
        b"[" * 100_000 + b"]" * 100_000,
    ],
)
def test_not_cancel_bodies(body):
    assert not is_cancel_body(body)


@pytest.mark.parametrize(
    ("query", "ok"),
    [
        ("", True),
        ("update_mask=state", True),
        ("update_mask=state&update_mask=state", True),
        ("update%5Fmask=state", True),
        ("update_mask=note", False),
        ("update_mask=state,note", False),
        ("update_mask=", False),
        ("update_mask", False),
        ("state=failed", False),
    ],
)
def test_cancel_query(query, ok):
    assert is_cancel_query(query) is ok


@pytest.mark.parametrize(
    ("triggered_by", "state", "ok"),
    [
        ("optimization-service", "running", True),
        ("optimization-service", "queued", True),
        ("optimization-service", "failed", False),
        ("optimization-service", "success", False),
        ("admin", "running", False),
        (None, "running", False),
        ("", "running", False),
    ],
)
def test_may_cancel_only_its_own_active_run(triggered_by, state, ok):
    assert may_cancel(triggered_by=triggered_by, state=state, user_name="optimization-service") is ok
    assert not may_cancel(triggered_by="", state="running", user_name="")


def test_routes_and_which_bodies_are_recorded():
    assert route_of(RUN_PATH) == Route("run", JOB, "req-1")
    assert route_of(f"{RUN_PATH}/taskInstances/submit") == Route("task_instances", JOB, "req-1")
    assert route_of("/api/v2/dags") is None
    assert records_body("PATCH", RUN_PATH)
    assert not records_body("PATCH", f"/api/v2/dags/{JOB}")
    assert not records_body("POST", f"/api/v2/dags/{JOB}/dagRuns")
    assert not records_body("GET", RUN_PATH)
