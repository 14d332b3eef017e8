"""Hostile and malformed requests get Databricks-shaped errors, and the server keeps serving."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from dsbridge_local.emulator.server import BackgroundServer
from tests.emulator.conftest import submit, wait_for

SUBMIT = "/api/2.2/jobs/runs/submit"


def _task(path: Any, **extra: Any) -> dict[str, Any]:
    return {"run_name": "h", "tasks": [{"task_key": "t", "notebook_task": {"notebook_path": path}, **extra}]}


def _still_serving(http: httpx.Client) -> None:
    run = wait_for(http, submit(http, "/jobs/echo"))
    assert run["state"]["result_state"] == "SUCCESS"


def _error(response: httpx.Response, status: int, code: str) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error_code", "message"} and body["error_code"] == code, body
    return str(body["message"])


@pytest.mark.parametrize(
    "path",
    [
        "/../secret",
        "/jobs/../../secret",
        "/jobs/link_out",  # symlink pointing outside the workspace
        "jobs/echo",  # workspace paths are absolute
        "/etc/passwd",
        "/jobs/echo\x00.py",
        "",
    ],
)
def test_path_traversal_is_refused(client: httpx.Client, path: str) -> None:
    message = _error(client.post(SUBMIT, json=_task(path)), 400, "INVALID_PARAMETER_VALUE")
    assert "escaped" not in message
    _still_serving(client)


def test_unknown_notebook_is_invalid_parameter(client: httpx.Client) -> None:
    message = _error(client.post(SUBMIT, json=_task("/jobs/nope")), 400, "INVALID_PARAMETER_VALUE")
    assert "/jobs/nope" in message


def test_base_parameters_over_1_mb(client: httpx.Client) -> None:
    body = _task("/jobs/echo")
    body["tasks"][0]["notebook_task"]["base_parameters"] = {"blob": "x" * (1024 * 1024 + 1)}
    message = _error(client.post(SUBMIT, json=body), 400, "INVALID_PARAMETER_VALUE")
    assert "1MB" in message
    _still_serving(client)


def test_unknown_fields_are_ignored(client: httpx.Client) -> None:
    body = _task("/jobs/echo", surprise={"nested": True})
    body["not_a_field"] = [1, 2, 3]
    body["email_notifications"] = {"on_failure": ["ops@example.com"]}
    response = client.post(SUBMIT, json=body)
    assert response.status_code == 200
    assert wait_for(client, response.json()["run_id"])["state"]["result_state"] == "SUCCESS"


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"tasks": "not a list"}, "MALFORMED_REQUEST"),
        ({"tasks": [123]}, "MALFORMED_REQUEST"),
        ({"tasks": [{"task_key": 5, "notebook_task": {"notebook_path": "/jobs/echo"}}]}, "MALFORMED_REQUEST"),
        ({"tasks": [{"task_key": "t", "notebook_task": {"notebook_path": 7}}]}, "MALFORMED_REQUEST"),
        ({"tasks": [{"task_key": "t", "notebook_task": "x"}]}, "MALFORMED_REQUEST"),
        (
            {"tasks": [{"task_key": "t", "notebook_task": {"notebook_path": "/jobs/echo", "base_parameters": []}}]},
            "MALFORMED_REQUEST",
        ),
        (
            {
                "tasks": [
                    {"task_key": "t", "notebook_task": {"notebook_path": "/jobs/echo", "base_parameters": {"a": {}}}}
                ]
            },
            "MALFORMED_REQUEST",
        ),
        ({**_task("/jobs/echo"), "timeout_seconds": "soon"}, "MALFORMED_REQUEST"),
        ({**_task("/jobs/echo"), "timeout_seconds": True}, "MALFORMED_REQUEST"),
        ({**_task("/jobs/echo"), "timeout_seconds": -5}, "INVALID_PARAMETER_VALUE"),
        ({**_task("/jobs/echo"), "run_name": ["x"]}, "MALFORMED_REQUEST"),
        ({}, "INVALID_PARAMETER_VALUE"),
        ({"tasks": []}, "INVALID_PARAMETER_VALUE"),
        ({"tasks": [{"notebook_task": {"notebook_path": "/jobs/echo"}}]}, "INVALID_PARAMETER_VALUE"),
        (
            {"tasks": [{"task_key": "bad key!", "notebook_task": {"notebook_path": "/jobs/echo"}}]},
            "INVALID_PARAMETER_VALUE",
        ),
        ({"tasks": [{"task_key": "t"}]}, "INVALID_PARAMETER_VALUE"),
        ({"tasks": [{"task_key": "t", "spark_python_task": {"python_file": "x.py"}}]}, "INVALID_PARAMETER_VALUE"),
        (
            {
                "tasks": [
                    {"task_key": "t", "notebook_task": {"notebook_path": "/jobs/echo"}},
                    {"task_key": "t", "notebook_task": {"notebook_path": "/jobs/echo"}},
                ]
            },
            "INVALID_PARAMETER_VALUE",
        ),
        (
            {
                "tasks": [
                    {
                        "task_key": "a",
                        "depends_on": [{"task_key": "b"}],
                        "notebook_task": {"notebook_path": "/jobs/echo"},
                    },
                    {
                        "task_key": "b",
                        "depends_on": [{"task_key": "a"}],
                        "notebook_task": {"notebook_path": "/jobs/echo"},
                    },
                ]
            },
            "INVALID_PARAMETER_VALUE",
        ),
        (
            {"tasks": [{"task_key": f"t{i}", "notebook_task": {"notebook_path": "/jobs/echo"}} for i in range(101)]},
            "INVALID_PARAMETER_VALUE",
        ),
    ],
)
def test_wrong_types_and_shapes(client: httpx.Client, body: dict[str, Any], code: str) -> None:
    _error(client.post(SUBMIT, json=body), 400, code)


@pytest.mark.parametrize(
    "raw",
    [b"{not json", b"[1, 2, 3]", b'"a string"', b"\xff\xfe\x00garbage", b"[" * 100_000 + b"]" * 100_000],
)
def test_non_json_bodies(client: httpx.Client, raw: bytes) -> None:
    response = client.post(SUBMIT, content=raw, headers={"Content-Type": "application/json"})
    _error(response, 400, "MALFORMED_REQUEST")
    _still_serving(client)


def test_oversized_body(client: httpx.Client) -> None:
    raw = b'{"run_name": "' + b"x" * (11 * 1024 * 1024) + b'"}'
    response = client.post(SUBMIT, content=raw, headers={"Content-Type": "application/json"})
    _error(response, 400, "MALFORMED_REQUEST")
    _still_serving(client)


@pytest.mark.parametrize(
    ("params", "status", "code"),
    [
        ({}, 400, "INVALID_PARAMETER_VALUE"),
        ({"run_id": "abc"}, 400, "INVALID_PARAMETER_VALUE"),
        ({"run_id": "-3"}, 400, "INVALID_PARAMETER_VALUE"),
        ({"run_id": "99999999"}, 404, "RESOURCE_DOES_NOT_EXIST"),
    ],
)
def test_run_id_errors(client: httpx.Client, params: dict[str, str], status: int, code: str) -> None:
    for path in ("get", "get-output"):
        _error(client.get(f"/api/2.2/jobs/runs/{path}", params=params), status, code)
    _error(client.post("/api/2.2/jobs/runs/cancel", json={"run_id": params.get("run_id")}), status, code)


def test_auth_errors(emulator: BackgroundServer) -> None:
    with httpx.Client(base_url=emulator.url, timeout=10) as anonymous:
        _error(anonymous.get("/api/2.2/jobs/runs/get", params={"run_id": 1}), 401, "UNAUTHENTICATED")
        wrong = anonymous.get("/api/2.2/jobs/runs/get", params={"run_id": 1}, headers={"Authorization": "Bearer nope"})
        _error(wrong, 403, "PERMISSION_DENIED")
        _error(anonymous.post(SUBMIT, json=_task("/jobs/echo")), 401, "UNAUTHENTICATED")
        assert anonymous.get("/health").json()["status"] == "ok"  # supervisors need no token


def test_unknown_endpoint_and_wrong_method(client: httpx.Client) -> None:
    _error(client.get("/api/2.2/jobs/runs/nope"), 404, "ENDPOINT_NOT_FOUND")
    _error(client.get(SUBMIT), 404, "ENDPOINT_NOT_FOUND")
    _still_serving(client)
