"""The reference service: verifies before storing, keeps the latest event per request, guards its views."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from dsbridge.callback.event import FAILED, SUCCEEDED, encode
from dsbridge.callback.signing import new_secret
from dsbridge_local.service.app import create_app
from tests.unit.client.events import JOB, REQUEST, SECRET, event, refusal, signed

PATH = "/callbacks/dsbridge"
TOKEN = "admin-token-for-tests-0123456789"
ADMIN = {"Authorization": f"Bearer {TOKEN}"}
EVENT_KEYS = {"event_id", "path", "headers", "body", "payload", "deliveries", "received_at", "last_received_at"}


def app(tmp_path: Path, **kw: Any) -> Any:
    kw.setdefault("admin_token", TOKEN)
    return create_app(kw.pop("secrets", [SECRET]), tmp_path / "events.sqlite3", **kw)


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    with TestClient(app(tmp_path, max_body_bytes=64 * 1024)) as c:
        yield c


def deliver(client: TestClient, payload: dict[str, Any] | bytes, path: str = PATH, **kw: Any) -> Any:
    body, headers = signed(payload, **kw)
    return client.post(path, content=body, headers=headers)


def stored(client: TestClient) -> list[dict[str, Any]]:
    answer = client.get("/events", headers=ADMIN)
    assert answer.status_code == 200, answer.text
    return list(answer.json())


# --- receiving -----------------------------------------------------------------------------------


def test_valid_callback_is_stored(client: TestClient) -> None:
    sent = event()
    r = deliver(client, sent)
    assert r.status_code == 200, r.text
    assert r.json() == {"status": "stored", "event_id": sent["event_id"], "deliveries": 1}
    [kept] = stored(client)
    assert set(kept) == EVENT_KEYS
    assert kept["payload"] == sent and kept["deliveries"] == 1 and kept["path"] == PATH
    assert kept["headers"]["webhook-id"] == sent["event_id"]
    assert kept["headers"]["webhook-signature"].startswith("v1,")
    assert kept["body"].encode() == encode(sent)
    assert client.get(f"/events/{sent['event_id']}", headers=ADMIN).json() == kept
    assert client.get("/health").json() == {"status": "ok", "events": 1}


def test_replays_count_deliveries_and_keep_the_first_body_byte_exact(client: TestClient) -> None:
    sent = event(FAILED, error={"code": "notebook_failed", "message": "café é ☃"})
    body = json.dumps(sent, indent=1, ensure_ascii=False).encode()  # any valid spelling stays as sent
    for expected in (1, 2, 3):
        r = deliver(client, body, webhook_id=sent["event_id"])
        assert r.status_code == 200
        assert r.json()["deliveries"] == expected
        assert r.json()["status"] == ("stored" if expected == 1 else "duplicate")
    [kept] = stored(client)
    assert kept["deliveries"] == 3
    assert kept["body"].encode("utf-8") == body
    assert kept["last_received_at"] >= kept["received_at"]


def test_concurrent_replays_are_counted_exactly(client: TestClient) -> None:
    body, headers = signed(event())
    with ThreadPoolExecutor(max_workers=8) as pool:
        answers = list(pool.map(lambda _: client.post(PATH, content=body, headers=headers), range(40)))
    assert Counter(a.json()["status"] for a in answers) == {"stored": 1, "duplicate": 39}
    assert stored(client)[0]["deliveries"] == 40


def test_any_path_under_callbacks_is_accepted(client: TestClient) -> None:
    sent = event()
    assert deliver(client, sent, path="/callbacks/jobs/threshold").status_code == 200
    assert client.get(f"/events/{sent['event_id']}", headers=ADMIN).json()["path"] == "/callbacks/jobs/threshold"


def test_custom_callback_path_is_open(tmp_path: Path) -> None:
    with TestClient(app(tmp_path, callback_path="/hooks/in")) as c:
        assert deliver(c, event(), path="/hooks/in").status_code == 200


def test_rotation_receiver_with_two_secrets(tmp_path: Path) -> None:
    old, new = new_secret(), new_secret()
    with TestClient(app(tmp_path, secrets=[old, new])) as c:
        assert deliver(c, event(), secret=new).status_code == 200
        assert deliver(c, event(attempt=1), secret=[old, new]).status_code == 200


def _unauthentic(case: str) -> tuple[bytes, dict[str, str]]:
    body, headers = signed(event())
    if case == "tampered":
        body = body.replace(b"0.42", b"0.99")
    elif case == "wrong_secret":
        body, headers = signed(event(), secret=new_secret())
    elif case == "stale":
        body, headers = signed(event(), timestamp=datetime.now(UTC) - timedelta(minutes=10))
    elif case == "future":
        body, headers = signed(event(), timestamp=datetime.now(UTC) + timedelta(minutes=10))
    elif case == "missing_signature":
        del headers["webhook-signature"]
    elif case == "missing_id":
        del headers["webhook-id"]
    elif case == "no_headers":
        headers = {}
    elif case == "not_utf8":
        body = body.replace(b"0.42", b"\xff\xfe")
    return body, headers


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
        ("not_utf8", "not UTF-8"),
    ],
)
def test_unauthentic_is_401_and_nothing_is_stored(client: TestClient, case: str, detail: str) -> None:
    body, headers = _unauthentic(case)
    r = client.post(PATH, content=body, headers=headers)
    assert r.status_code == 401
    assert r.json()["error"] == "unauthorized"
    assert detail in r.json()["detail"]
    assert stored(client) == []


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (lambda e: e.pop("sequence"), "sequence"),
        (lambda e: e.update(attempt="0"), "attempt"),
        (lambda e: e.update(extra=1), "extra"),
        (lambda e: e.update(event_id="evt-1"), "event_id"),
    ],
)
def test_schema_violation_is_400_naming_the_field(client: TestClient, change: Any, field: str) -> None:
    sent = event()
    change(sent)
    r = deliver(client, encode(sent), webhook_id=sent["event_id"])
    assert r.status_code == 400
    assert r.json()["error"] == "bad_payload"
    assert f"field '{field}'" in r.json()["detail"]
    assert stored(client) == []


def test_webhook_id_that_is_not_the_event_id_is_400(client: TestClient) -> None:
    r = deliver(client, event(), webhook_id=event(attempt=3)["event_id"])
    assert r.status_code == 400
    assert "webhook-id" in r.json()["detail"]
    assert stored(client) == []


def test_signed_non_json_is_400(client: TestClient) -> None:
    r = deliver(client, b"<xml>not json</xml>")
    assert r.status_code == 400
    assert r.json()["error"] == "bad_payload"
    assert stored(client) == []


def test_oversized_body_is_413(client: TestClient) -> None:
    sent = event(result={"padding": "x" * 70_000})
    r = deliver(client, sent)
    assert r.status_code == 413
    assert stored(client) == []


def test_oversized_streamed_body_is_413_before_it_is_read(tmp_path: Path) -> None:
    """Driven at the ASGI level: the test client would read the whole body before the app sees it."""
    service = app(tmp_path, max_body_bytes=64 * 1024)
    chunk, chunks_offered, answer = b"x" * 8192, 1000, []
    pulled = 0

    async def receive() -> dict[str, Any]:
        nonlocal pulled
        pulled += 1
        await asyncio.sleep(0)  # a network read would yield here
        return {"type": "http.request", "body": chunk, "more_body": pulled < chunks_offered}

    async def send(message: dict[str, Any]) -> None:
        await asyncio.sleep(0)
        answer.append(message)

    headers = [(k.encode(), v.encode()) for k, v in signed(b"irrelevant")[1].items()]
    scope = {"type": "http", "http_version": "1.1", "method": "POST", "path": PATH, "raw_path": PATH.encode()}
    scope |= {"query_string": b"", "headers": headers, "scheme": "http", "server": ("127.0.0.1", 80)}
    scope |= {"client": ("127.0.0.1", 5000), "root_path": ""}
    asyncio.run(service(scope, receive, send))
    assert answer[0]["status"] == 413
    assert pulled <= 64 * 1024 // len(chunk) + 1  # stopped at the limit, not at the end


# --- the latest event per request ----------------------------------------------------------------


def test_out_of_order_arrival_keeps_the_newer_event(client: TestClient) -> None:
    older = event(FAILED)
    newer = event(attempt=1, supersedes=older["event_id"])
    assert deliver(client, newer).json()["status"] == "stored"
    assert deliver(client, older).json()["status"] == "superseded"
    [listed] = client.get("/requests", headers=ADMIN).json()
    assert (listed["job"], listed["request_id"]) == (JOB, REQUEST)
    assert listed["latest"]["event_id"] == newer["event_id"]
    assert set(listed["latest"]) == EVENT_KEYS
    assert listed["superseded"] == [older["event_id"]] and listed["refusals"] == []
    one = client.get(f"/requests/{JOB}/{REQUEST}", headers=ADMIN).json()
    assert one["latest"]["payload"]["sequence"] == 2
    assert [(e["event_id"], e["role"]) for e in one["history"]] == [
        (newer["event_id"], "latest"),
        (older["event_id"], "superseded"),
    ]
    assert len(stored(client)) == 2  # /events still lists every event


def test_conflict_refusal_is_stored_but_never_latest(client: TestClient) -> None:
    refused = refusal()
    assert deliver(client, refused).json()["status"] == "refusal"
    only_refused = client.get(f"/requests/{JOB}/{REQUEST}", headers=ADMIN).json()
    assert only_refused["latest"] is None and only_refused["refusals"] == [refused["event_id"]]
    story = event()
    assert deliver(client, story).json()["status"] == "stored"
    assert deliver(client, refusal("third")).json()["status"] == "refusal"
    one = client.get(f"/requests/{JOB}/{REQUEST}", headers=ADMIN).json()
    assert one["latest"]["event_id"] == story["event_id"]
    assert len(one["refusals"]) == 2


def test_unknown_event_and_request_are_404(client: TestClient) -> None:
    assert client.get("/events/nope", headers=ADMIN).status_code == 404
    assert client.get(f"/requests/{JOB}/nope", headers=ADMIN).status_code == 404


def test_request_ids_with_slashes_are_found(client: TestClient) -> None:
    deliver(client, event(request_id="team/a/req 1"))
    assert client.get(f"/requests/{JOB}/team%2Fa/req%201", headers=ADMIN).json()["request_id"] == "team/a/req 1"


# --- the page ------------------------------------------------------------------------------------


def test_page_shows_latest_first_and_marks_superseded_and_refused(client: TestClient) -> None:
    older = event(FAILED)
    deliver(client, older)
    deliver(client, event(SUCCEEDED, attempt=1, supersedes=older["event_id"]))
    deliver(client, refusal())
    page = client.get("/", headers=ADMIN)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "1 request(s), 3 event(s)" in page.text
    rows = [line for line in page.text.splitlines() if "<tr class=" in line]
    assert ["request-succeeded latest" in rows[0], "refusal" in rows[1], "superseded" in rows[2]] == [True] * 3
    assert f"superseded by {event(attempt=1)['event_id']}" in rows[2]
    assert "refused" in rows[1] and "error [notebook_failed]: boom" in rows[2]
    assert "0.42" in rows[0] and "s3://dsbridge-results" in rows[0]
    assert 'name="referrer" content="no-referrer"' in page.text


def test_page_escapes_hostile_content(client: TestClient) -> None:
    hostile = "<script>alert(1)</script>"
    deliver(
        client,
        event(
            FAILED,
            job=f'"><img src=x onerror=alert(1)>{hostile}',
            request_id=hostile,
            error={"code": "notebook_failed", "message": hostile, "trace": hostile},
        ),
    )
    page = client.get("/", headers=ADMIN)
    assert page.status_code == 200
    assert "<script>" not in page.text and "<img" not in page.text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page.text


# --- the admin token -----------------------------------------------------------------------------

GUARDED = [
    ("GET", "/"),
    ("GET", "/events"),
    ("GET", "/events/evt_x"),
    ("GET", "/requests"),
    ("GET", f"/requests/{JOB}/{REQUEST}"),
    ("GET", "/admin/faults"),
    ("POST", "/admin/faults"),
    ("GET", "/openapi.json"),
]


@pytest.mark.parametrize(("method", "path"), GUARDED)
@pytest.mark.parametrize(
    ("headers", "detail"),
    [({}, "admin token required"), ({"Authorization": "Bearer wrong-token-0123456789"}, "does not match")],
)
def test_token_is_required(client: TestClient, method: str, path: str, headers: dict[str, str], detail: str) -> None:
    r = client.request(method, path, headers=headers, json={"status": None} if method == "POST" else None)
    assert r.status_code == 401
    assert r.headers["www-authenticate"] == "Bearer"
    assert r.json()["error"] == "unauthorized" and detail in r.json()["detail"]
    assert TOKEN not in r.text


@pytest.mark.parametrize(("method", "path"), GUARDED)
def test_right_token_is_let_in(client: TestClient, method: str, path: str) -> None:
    r = client.request(method, path, headers=ADMIN, json={"status": None} if method == "POST" else None)
    assert r.status_code in (200, 404)


def test_bearer_scheme_is_case_insensitive(client: TestClient) -> None:
    assert client.get("/events", headers={"Authorization": f"bearer {TOKEN}"}).status_code == 200
    assert client.get("/events", headers={"Authorization": f"Basic {TOKEN}"}).status_code == 401


def test_query_token_opens_the_page_only(client: TestClient) -> None:
    assert client.get("/", params={"token": TOKEN}).status_code == 200
    assert client.get("/", params={"token": "wrong"}).status_code == 401
    assert client.get("/events", params={"token": TOKEN}).status_code == 401
    assert client.post("/admin/faults", params={"token": TOKEN}, json={"status": 500}).status_code == 401


def test_health_and_callbacks_need_no_token(client: TestClient) -> None:
    assert client.get("/health").status_code == 200
    body, headers = signed(event())
    r = client.post(PATH, content=body, headers=headers | {"Authorization": "Bearer whatever"})
    assert r.status_code == 200


@pytest.mark.parametrize("token", ["", "   ", "short", "has spaces in the middle of it"])
def test_no_usable_admin_token_refuses_to_start(tmp_path: Path, token: str) -> None:
    with pytest.raises(ValueError, match="DSBRIDGE_SERVICE_ADMIN_TOKEN"):
        app(tmp_path, admin_token=token)


# --- fault switch and lifecycle ------------------------------------------------------------------


def test_fault_switch_answers_n_times_then_recovers(client: TestClient) -> None:
    r = client.post("/admin/faults", json={"status": 500, "count": 3}, headers=ADMIN)
    assert r.status_code == 200
    assert r.json()["remaining"] == 3
    body, headers = signed(event())
    codes = [client.post(PATH, content=body, headers=headers).status_code for _ in range(4)]
    assert codes == [500, 500, 500, 200]
    [kept] = stored(client)
    assert kept["deliveries"] == 1
    assert client.get("/admin/faults", headers=ADMIN).json()["served"] == 3


def test_fault_switch_reset_and_bounds(client: TestClient) -> None:
    def arm(settings: dict[str, Any]) -> int:
        return int(client.post("/admin/faults", json=settings, headers=ADMIN).status_code)

    assert arm({"status": 503, "count": 5}) == 200
    assert client.post("/admin/faults", json={"status": None}, headers=ADMIN).json()["remaining"] == 0
    assert deliver(client, event()).status_code == 200
    assert arm({"status": 200}) == 422
    assert arm({"status": 500, "count": 10**6}) == 422
    assert arm({"status": 500, "delay_seconds": 3600}) == 422


def test_faults_can_be_disabled(tmp_path: Path) -> None:
    with TestClient(app(tmp_path, enable_faults=False)) as c:
        assert c.post("/admin/faults", json={"status": 500}, headers=ADMIN).status_code in (404, 405)


def test_events_survive_restart(tmp_path: Path) -> None:
    body, headers = signed(event())
    with TestClient(app(tmp_path)) as c:
        c.post(PATH, content=body, headers=headers)
    with TestClient(app(tmp_path)) as c:
        assert c.post(PATH, content=body, headers=headers).json()["deliveries"] == 2


def test_no_secret_refuses_to_start(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="DSBRIDGE_SERVICE_SECRETS"):
        app(tmp_path, secrets=[])


def test_malformed_secret_refuses_to_start(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="invalid webhook secret"):
        app(tmp_path, secrets="x")
