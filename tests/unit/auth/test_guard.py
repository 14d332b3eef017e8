"""The request guard: what it records, that the app gets the request unchanged, and where it is seen."""

from __future__ import annotations

import asyncio
import threading
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Request
from fastapi.testclient import TestClient

from dsbridge.auth.guard import MAX_BODY, RequestGuard, current_request, read_bounded, replaying, route_path
from dsbridge.auth.policy import ApiRequest

RUN_PATH = "/api/v2/dags/merchant_threshold/dagRuns/req-1"


def receiver(messages: list[dict[str, Any]]):
    """A client that sends `messages`, then waits (like uvicorn) until it disconnects."""
    pending = list(messages)

    async def receive() -> dict[str, Any]:
        await asyncio.sleep(0)
        return pending.pop(0) if pending else {"type": "http.disconnect"}

    return receive


def chunks(*parts: bytes) -> list[dict[str, Any]]:
    return [
        {"type": "http.request", "body": part, "more_body": index < len(parts) - 1} for index, part in enumerate(parts)
    ]


def test_a_chunked_body_is_recorded_and_replayed_message_by_message():
    sent = chunks(b'{"state"', b': "failed"}')
    messages, body = asyncio.run(read_bounded(receiver(sent)))
    assert body == b'{"state": "failed"}'
    replay = replaying(messages, receiver([]))

    async def drain() -> list[dict[str, Any]]:
        return [await replay() for _ in range(3)]

    assert asyncio.run(drain()) == [*sent, {"type": "http.disconnect"}]


def test_an_oversized_body_is_not_recorded_and_reading_stops_at_the_bound():
    sent = chunks(b"x" * 3000, b"y" * 3000, b"z" * 3000)
    messages, body = asyncio.run(read_bounded(receiver(sent), limit=MAX_BODY))
    assert body is None
    assert messages == sent[:2]


def test_a_disconnect_before_the_end_records_nothing():
    sent = [*chunks(b"{", b"}")[:1], {"type": "http.disconnect"}]
    messages, body = asyncio.run(read_bounded(receiver(sent)))
    assert body is None and messages == sent


def test_route_path_drops_the_root_path():
    assert route_path({"path": "/airflow/api/v2/dags", "root_path": "/airflow"}) == "/api/v2/dags"
    assert route_path({"path": "/api/v2/dags", "root_path": "/airflow"}) == "/api/v2/dags"
    assert route_path({"path": "/airflowx/api", "root_path": "/airflow"}) == "/airflowx/api"
    assert route_path({"path": "/api/v2/dags", "root_path": ""}) == "/api/v2/dags"


def seen_by_dependency() -> dict[str, Any]:
    """A sync dependency, like Airflow's `requires_access_*`: FastAPI runs it in a worker thread."""
    return {"request": current_request(), "thread": threading.current_thread().name}


Seen = Annotated[dict[str, Any], Depends(seen_by_dependency)]


def guarded_app() -> FastAPI:
    """Airflow's shape: a sync dependency (run in a worker thread) asks; the route reads the body."""
    app = FastAPI()

    @app.patch("/api/v2/dags/{dag_id}/dagRuns/{run_id}")
    async def patch_run(request: Request, seen: Seen) -> dict[str, Any]:
        return {"seen": _plain(seen), "body": (await request.body()).decode()}

    @app.post("/api/v2/dags/{dag_id}/dagRuns")
    async def trigger(request: Request, seen: Seen) -> dict[str, Any]:
        return {"seen": _plain(seen), "body": (await request.body()).decode()}

    app.add_middleware(RequestGuard)
    return app


def _plain(seen: dict[str, Any]) -> dict[str, Any]:
    request: ApiRequest | None = seen["request"]
    recorded = None
    if request is not None:
        body = None if request.body is None else request.body.decode()
        recorded = {"method": request.method, "path": request.path, "query": request.query, "body": body}
    return {"request": recorded, "thread": seen["thread"]}


def test_the_request_is_seen_in_the_threadpool_and_the_body_reaches_the_route_unchanged():
    with TestClient(guarded_app()) as client:
        answer = client.patch(f"{RUN_PATH}?update_mask=state", content=b'{"state": "failed"}').json()
    assert answer["body"] == '{"state": "failed"}'
    assert answer["seen"]["request"] == {
        "method": "PATCH",
        "path": RUN_PATH,
        "query": "update_mask=state",
        "body": '{"state": "failed"}',
    }
    assert answer["seen"]["thread"] != threading.main_thread().name
    assert current_request() is None


def test_an_oversized_body_reaches_the_route_whole_but_is_not_recorded():
    body = b'{"state": "failed", "pad": "' + b"x" * (2 * MAX_BODY) + b'"}'
    with TestClient(guarded_app()) as client:
        answer = client.patch(RUN_PATH, content=body).json()
    assert answer["body"] == body.decode()
    assert answer["seen"]["request"]["body"] is None


def test_bodies_of_other_routes_are_neither_read_nor_recorded():
    with TestClient(guarded_app()) as client:
        answer = client.post("/api/v2/dags/merchant_threshold/dagRuns", json={"conf": {}}).json()
    assert answer["body"] == '{"conf":{}}'
    assert answer["seen"]["request"]["method"] == "POST"
    assert answer["seen"]["request"]["body"] is None


def test_requests_do_not_see_each_other():
    app = guarded_app()
    with TestClient(app) as client:
        first = client.patch(RUN_PATH, content=b'{"state": "failed"}').json()
        second = client.patch(RUN_PATH, content=b'{"note": "x"}').json()
    assert first["seen"]["request"]["body"] == '{"state": "failed"}'
    assert second["seen"]["request"]["body"] == '{"note": "x"}'
