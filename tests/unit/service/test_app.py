"""The reference service: verifies before storing, stores once per id, shows everything safely."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from dsbridge.callback.signing import new_secret, sign_headers
from dsbridge.service.app import create_app

SECRET = new_secret()
PATH = "/callbacks/dsbridge"


def event(event_id: str = "evt-1", **extra: Any) -> dict[str, Any]:
    payload = {
        "schema_version": "1",
        "event_id": event_id,
        "type": "request.succeeded",
        "job": "threshold",
        "request_id": "req-1",
        "occurred_at": "2026-01-01T00:00:00Z",
        "result": {"threshold": 0.42},
        "result_location": "s3://bucket/threshold/req-1/",
        "error": None,
        "links": {"airflow_run": "http://a", "databricks_run": "http://d"},
        "timings": {},
    }
    return payload | extra


def signed(body: bytes, event_id: str = "evt-1", secret: str = SECRET, **kw: Any) -> dict[str, str]:
    return sign_headers(secret, event_id, body, **kw) | {"content-type": "application/json"}


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    app = create_app([SECRET], tmp_path / "events.sqlite3", max_body_bytes=64 * 1024)
    with TestClient(app) as c:
        yield c


def post(client: TestClient, body: bytes, headers: dict[str, str], path: str = PATH) -> Any:
    return client.post(path, content=body, headers=headers)


def test_valid_callback_is_stored(client: TestClient) -> None:
    body = json.dumps(event()).encode()
    r = post(client, body, signed(body))
    assert r.status_code == 200, r.text
    assert r.json() == {"status": "stored", "event_id": "evt-1", "deliveries": 1}
    [stored] = client.get("/events").json()
    assert stored["event_id"] == "evt-1"
    assert stored["payload"]["result"] == {"threshold": 0.42}
    assert stored["deliveries"] == 1
    assert stored["headers"]["webhook-id"] == "evt-1"
    assert stored["headers"]["webhook-signature"].startswith("v1,")
    assert stored["received_at"]
    assert client.get("/events/evt-1").json() == stored
    assert client.get("/health").json() == {"status": "ok", "events": 1}


def test_duplicate_counts_deliveries_and_keeps_first_body_byte_exact(client: TestClient) -> None:
    # Odd but valid JSON: spacing, key order and unicode escapes must survive untouched.
    body = b'{"type":"request.failed",  "event_id":"evt-9", "error": {"message": "caf\\u00e9 \xc3\xa9"}}'
    for expected in (1, 2, 3):
        r = post(client, body, signed(body, "evt-9"))
        assert r.status_code == 200
        assert r.json()["deliveries"] == expected
        assert r.json()["status"] == ("stored" if expected == 1 else "duplicate")
    stored = client.get("/events/evt-9").json()
    assert stored["deliveries"] == 3
    assert stored["body"].encode("utf-8") == body
    assert stored["last_received_at"] >= stored["received_at"]
    assert len(client.get("/events").json()) == 1


def test_any_path_under_callbacks_is_accepted(client: TestClient) -> None:
    body = json.dumps(event("evt-2")).encode()
    r = post(client, body, signed(body, "evt-2"), path="/callbacks/jobs/threshold")
    assert r.status_code == 200
    assert client.get("/events/evt-2").json()["path"] == "/callbacks/jobs/threshold"


def test_custom_callback_path(tmp_path: Path) -> None:
    with TestClient(create_app(SECRET, tmp_path / "db.sqlite3", callback_path="/hooks/in")) as c:
        body = json.dumps(event()).encode()
        assert c.post("/hooks/in", content=body, headers=signed(body)).status_code == 200


def test_rotation_receiver_with_two_secrets(tmp_path: Path) -> None:
    old, new = new_secret(), new_secret()
    with TestClient(create_app([old, new], tmp_path / "db.sqlite3")) as c:
        body = json.dumps(event()).encode()
        assert c.post(PATH, content=body, headers=signed(body, secret=new)).status_code == 200


@pytest.mark.parametrize(
    ("case", "detail"),
    [
        ("tampered", "bad signature"),
        ("wrong_secret", "bad signature"),
        ("stale", "stale timestamp"),
        ("future", "future timestamp"),
        ("missing_signature", "missing webhook-signature"),
        ("missing_id", "missing webhook-id"),
        ("no_headers", "missing webhook-id"),
    ],
)
def test_rejected_and_nothing_stored(client: TestClient, case: str, detail: str) -> None:
    body = json.dumps(event()).encode()
    headers = signed(body)
    if case == "tampered":
        body = body.replace(b"0.42", b"0.99")
    elif case == "wrong_secret":
        headers = signed(body, secret=new_secret())
    elif case == "stale":
        headers = signed(body, timestamp=datetime.now(UTC) - timedelta(minutes=10))
    elif case == "future":
        headers = signed(body, timestamp=datetime.now(UTC) + timedelta(minutes=10))
    elif case == "missing_signature":
        del headers["webhook-signature"]
    elif case == "missing_id":
        del headers["webhook-id"]
    elif case == "no_headers":
        headers = {}
    r = post(client, body, headers)
    assert r.status_code == 401
    assert r.json()["error"] == "unauthorized"
    assert detail in r.json()["detail"]
    assert client.get("/events").json() == []


def test_signed_non_json_is_400(client: TestClient) -> None:
    body = b"<xml>not json</xml>"
    r = post(client, body, signed(body))
    assert r.status_code == 400
    assert r.json()["error"] == "bad_payload"
    assert client.get("/events").json() == []


def test_oversized_body_is_413(client: TestClient) -> None:
    body = json.dumps(event(padding="x" * 70_000)).encode()
    r = post(client, body, signed(body))
    assert r.status_code == 413
    assert client.get("/events").json() == []


def test_oversized_chunked_body_is_413(client: TestClient) -> None:
    def chunks() -> Iterator[bytes]:
        for _ in range(20):
            yield b"x" * 8192

    r = client.post(PATH, content=chunks(), headers=signed(b"irrelevant"))
    assert r.status_code == 413


def test_unknown_event_is_404(client: TestClient) -> None:
    assert client.get("/events/nope").status_code == 404


def test_page_lists_events_and_escapes_hostile_content(client: TestClient) -> None:
    hostile = "<script>alert(1)</script>"
    body = json.dumps(
        event(
            "evt-x",
            type="request.failed",
            job=f'"><img src=x onerror=alert(1)>{hostile}',
            request_id=hostile,
            result=None,
            error={"message": hostile, "trace": "..."},
        )
    ).encode()
    assert post(client, body, signed(body, "evt-x")).status_code == 200
    page = client.get("/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert "<script>" not in page.text
    assert "<img" not in page.text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page.text
    assert "request.failed" in page.text


def test_page_survives_odd_shapes(client: TestClient) -> None:
    for i, payload in enumerate([{"type": 5, "job": ["a"], "error": "boom"}, {}, {"result": [1, 2]}]):
        body = json.dumps(payload).encode()
        assert post(client, body, signed(body, f"odd-{i}")).status_code == 200
    page = client.get("/")
    assert page.status_code == 200
    assert "error: boom" in page.text


def test_page_shows_success_summary(client: TestClient) -> None:
    body = json.dumps(event()).encode()
    post(client, body, signed(body))
    page = client.get("/").text
    assert "threshold" in page and "req-1" in page and "0.42" in page and "s3://bucket" in page


def test_fault_switch_answers_n_times_then_recovers(client: TestClient) -> None:
    r = client.post("/admin/faults", json={"status": 500, "count": 3})
    assert r.status_code == 200
    assert r.json()["remaining"] == 3
    body = json.dumps(event()).encode()
    codes = [post(client, body, signed(body)).status_code for _ in range(4)]
    assert codes == [500, 500, 500, 200]
    [stored] = client.get("/events").json()
    assert stored["deliveries"] == 1
    assert client.get("/admin/faults").json()["served"] == 3


def test_fault_switch_reset_and_bounds(client: TestClient) -> None:
    assert client.post("/admin/faults", json={"status": 503, "count": 5}).status_code == 200
    assert client.post("/admin/faults", json={"status": None}).json()["remaining"] == 0
    body = json.dumps(event()).encode()
    assert post(client, body, signed(body)).status_code == 200
    assert client.post("/admin/faults", json={"status": 200}).status_code == 422
    assert client.post("/admin/faults", json={"status": 500, "count": 10**6}).status_code == 422
    assert client.post("/admin/faults", json={"status": 500, "delay_seconds": 3600}).status_code == 422


def test_faults_can_be_disabled(tmp_path: Path) -> None:
    with TestClient(create_app(SECRET, tmp_path / "db.sqlite3", enable_faults=False)) as c:
        assert c.post("/admin/faults", json={"status": 500}).status_code in (404, 405)


def test_events_survive_restart(tmp_path: Path) -> None:
    db = tmp_path / "db.sqlite3"
    body = json.dumps(event()).encode()
    with TestClient(create_app(SECRET, db)) as c:
        c.post(PATH, content=body, headers=signed(body))
    with TestClient(create_app(SECRET, db)) as c:
        assert c.post(PATH, content=body, headers=signed(body)).json()["deliveries"] == 2


def test_no_secret_refuses_to_start(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="DSBRIDGE_SERVICE_SECRETS"):
        create_app([], tmp_path / "db.sqlite3")


def test_malformed_secret_refuses_to_start(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="invalid webhook secret"):
        create_app("x", tmp_path / "db.sqlite3")
