"""The reference optimization service: receive, verify and keep dsbridge callbacks.

Why: this is the piece a development team copies. It shows the whole receiving side of the
contract in one page of code -- refuse oversized bodies, verify the signature, the timestamp and the
event's schema before trusting anything (`CallbackReceiver`), keep each event once and per request
the one with the highest sequence (`RequestStore`), answer 2xx quickly -- and lets people and tests
see what arrived (`/`, `/requests`, `/events`), behind an admin token.
The ``/admin/faults`` switch exists for fault-injection tests and should be dropped when copying.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from dsbridge.callback.signing import DEFAULT_TOLERANCE_SECONDS
from dsbridge.client import CallbackReceiver, PayloadError, RequestState, RequestStore, SignatureError
from dsbridge_local.service.auth import ENV_ADMIN_TOKEN, AdminTokenGuard, check_admin_token
from dsbridge_local.service.page import render_page

ENV_SECRETS = "DSBRIDGE_SERVICE_SECRETS"
ENV_DB = "DSBRIDGE_SERVICE_DB"
ENV_TOLERANCE = "DSBRIDGE_SERVICE_TOLERANCE_SECONDS"
ENV_CALLBACK_PATH = "DSBRIDGE_SERVICE_CALLBACK_PATH"
ENV_MAX_BODY = "DSBRIDGE_SERVICE_MAX_BODY_BYTES"
ENV_FAULTS = "DSBRIDGE_SERVICE_FAULTS"

DEFAULT_CALLBACK_PATH = "/callbacks/dsbridge"
DEFAULT_DB = ".dsbridge/service.sqlite3"
DEFAULT_MAX_BODY_BYTES = 1024 * 1024
MAX_FAULT_COUNT = 1000
MAX_FAULT_DELAY_SECONDS = 30.0


class FaultRequest(BaseModel):
    """Answer the next ``count`` callbacks with ``status`` (after ``delay_seconds``), storing nothing."""

    status: int | None = Field(default=None, ge=400, le=599)
    count: int = Field(default=1, ge=1, le=MAX_FAULT_COUNT)
    delay_seconds: float = Field(default=0.0, ge=0.0, le=MAX_FAULT_DELAY_SECONDS)


class _Faults:
    """The armed fault, if any. A lock keeps ``count`` exact under concurrent callbacks."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.status: int | None = None
        self.remaining = 0
        self.delay_seconds = 0.0
        self.served = 0

    def arm(self, req: FaultRequest) -> None:
        with self._lock:
            self.status = req.status
            self.remaining = req.count if req.status is not None else 0
            self.delay_seconds = req.delay_seconds if req.status is not None else 0.0

    def take(self) -> tuple[int, float] | None:
        with self._lock:
            if self.status is None or self.remaining <= 0:
                return None
            self.remaining -= 1
            self.served += 1
            fault = (self.status, self.delay_seconds)
            if self.remaining == 0:
                self.status, self.delay_seconds = None, 0.0
            return fault

    def as_json(self) -> dict[str, Any]:
        with self._lock:
            return {
                "status": self.status,
                "remaining": self.remaining,
                "delay_seconds": self.delay_seconds,
                "served": self.served,
            }


def _error(status: int, error: str, detail: str) -> JSONResponse:
    return JSONResponse({"error": error, "detail": detail}, status_code=status)


async def _read_body(request: Request, limit: int) -> bytes | None:
    """The raw body, or None as soon as it is known to exceed ``limit`` bytes."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        return None
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            return None
    return bytes(body)


def _received_headers(request: Request) -> dict[str, str]:
    headers: dict[str, str] = {}
    for name, value in request.headers.items():
        headers[name] = f"{headers[name]}, {value}" if name in headers else value
    return headers


def request_json(state: RequestState, *, with_history: bool = False) -> dict[str, Any]:
    """A request for `/requests`: its latest event in the `/events` shape, and the ids of the others."""
    found: dict[str, Any] = {
        "job": state.job,
        "request_id": state.request_id,
        "latest": state.latest.as_json() if state.latest else None,
        "superseded": [e.event_id for e in state.history if state.role(e) == "superseded"],
        "refusals": [e.event_id for e in state.history if state.role(e) == "refusal"],
        "last_received_at": state.last_received_at,
    }
    if with_history:
        found["history"] = [e.as_json() | {"role": state.role(e)} for e in state.history]
    return found


def create_app(
    secrets: str | Sequence[str],
    db_path: str | Path,
    *,
    admin_token: str,
    tolerance_seconds: int = DEFAULT_TOLERANCE_SECONDS,
    callback_path: str = DEFAULT_CALLBACK_PATH,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    enable_faults: bool = True,
) -> FastAPI:
    """The service. Callbacks are accepted at ``callback_path`` and at any path under ``/callbacks/``;
    they and ``/health`` are open, everything else needs ``admin_token``."""
    try:
        receiver = CallbackReceiver(secrets, tolerance_seconds=tolerance_seconds)
    except ValueError as exc:
        raise ValueError(f"no usable callback secret configured (set {ENV_SECRETS}): {exc}") from exc
    admin_token = check_admin_token(admin_token)
    store = RequestStore(db_path)
    faults = _Faults()
    app = FastAPI(title="dsbridge reference optimization service", version="2")
    app.state.store = store
    app.state.faults = faults

    def is_open(path: str) -> bool:
        return path in ("/health", callback_path) or path.startswith("/callbacks/")

    app.add_middleware(AdminTokenGuard, token=admin_token, is_open=is_open, query_token_paths=frozenset({"/"}))

    async def receive(request: Request) -> Response:
        fault = faults.take()
        if fault is not None:
            await asyncio.sleep(fault[1])
            return _error(fault[0], "injected_fault", "fault switch armed via /admin/faults")
        body = await _read_body(request, max_body_bytes)
        if body is None:
            return _error(413, "too_large", f"body exceeds {max_body_bytes} bytes")
        try:
            event = receiver.verify(request.headers, body)
        except PayloadError as exc:
            return _error(400, "bad_payload", str(exc))
        except SignatureError as exc:
            return _error(401, "unauthorized", str(exc))
        recorded = await run_in_threadpool(store.record, event, body, _received_headers(request), request.url.path)
        return JSONResponse(
            {"status": recorded.status, "event_id": recorded.event_id, "deliveries": recorded.deliveries}
        )

    if not callback_path.startswith("/callbacks/"):
        app.add_api_route(callback_path, receive, methods=["POST"], include_in_schema=True)
    app.add_api_route("/callbacks/{callback_name:path}", receive, methods=["POST"])

    @app.get("/", response_class=HTMLResponse)
    def page() -> HTMLResponse:
        return HTMLResponse(render_page(store.requests()))

    @app.get("/events")
    def events() -> list[dict[str, Any]]:
        return [e.as_json() for e in store.all()]

    @app.get("/events/{event_id}")
    def event(event_id: str) -> Response:
        found = store.get(event_id)
        if found is None:
            return _error(404, "not_found", f"no event {event_id!r}")
        return JSONResponse(found.as_json())

    @app.get("/requests")
    def requests() -> list[dict[str, Any]]:
        return [request_json(state) for state in store.requests()]

    @app.get("/requests/{job}/{request_id:path}")
    def request_state(job: str, request_id: str) -> Response:
        found = store.request(job, request_id)
        if found is None:
            return _error(404, "not_found", f"no events for request {request_id!r} of job {job!r}")
        return JSONResponse(request_json(found, with_history=True))

    @app.get("/health")
    def health() -> dict[str, Any]:
        return {"status": "ok", "events": store.count()}

    if enable_faults:

        @app.get("/admin/faults")
        def get_faults() -> dict[str, Any]:
            return faults.as_json()

        @app.post("/admin/faults")
        def set_faults(req: FaultRequest) -> dict[str, Any]:
            faults.arm(req)
            return faults.as_json()

    return app


def config_from_env() -> dict[str, Any]:
    """``create_app`` keyword arguments from the ``DSBRIDGE_SERVICE_*`` environment variables."""
    return {
        "secrets": os.environ.get(ENV_SECRETS, ""),
        "admin_token": os.environ.get(ENV_ADMIN_TOKEN, ""),
        "db_path": os.environ.get(ENV_DB, DEFAULT_DB),
        "tolerance_seconds": int(os.environ.get(ENV_TOLERANCE, DEFAULT_TOLERANCE_SECONDS)),
        "callback_path": os.environ.get(ENV_CALLBACK_PATH, DEFAULT_CALLBACK_PATH),
        "max_body_bytes": int(os.environ.get(ENV_MAX_BODY, DEFAULT_MAX_BODY_BYTES)),
        "enable_faults": os.environ.get(ENV_FAULTS, "1").lower() not in ("0", "false", "no"),
    }


def app_from_env() -> FastAPI:
    """The app configured from the environment (``uvicorn --factory dsbridge_local.service.app:app_from_env``)."""
    return create_app(**config_from_env())


def main(
    host: str = "127.0.0.1",
    port: int = 8090,
    db_path: str | Path | None = None,
    *,
    tolerance_seconds: int | None = None,
    callback_path: str | None = None,
    log_level: str = "warning",
) -> None:
    """Serve until stopped. Secrets and the admin token come from the environment only; other settings may be
    overridden."""
    import uvicorn

    config = config_from_env()
    overrides = {"db_path": db_path, "tolerance_seconds": tolerance_seconds, "callback_path": callback_path}
    config.update({k: v for k, v in overrides.items() if v is not None})
    uvicorn.run(create_app(**config), host=host, port=port, log_level=log_level, access_log=False)
