"""The reference optimization service: receive, verify and keep dsbridge callbacks.

Why: this is the piece a development team copies. It shows the whole receiving side of the
contract in one page of code -- refuse oversized bodies, verify the Standard Webhooks signature and
timestamp before trusting anything, store each event once by its id (deliveries are at least once),
answer 2xx quickly -- and lets people and tests see what arrived (``/`` and ``/events``).
The ``/admin/faults`` switch exists for fault-injection tests and should be dropped when copying.
"""

from __future__ import annotations

import asyncio
import html
import json
import os
import threading
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from string import Template
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from pydantic import BaseModel, Field

from dsbridge.callback.signing import (
    DEFAULT_TOLERANCE_SECONDS,
    PayloadError,
    SignatureError,
    parse_secrets,
    verify,
)
from dsbridge.service.store import EventStore, StoredEvent

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


def _text(value: Any, limit: int = 200) -> str:
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def summarize(payload: Any) -> str:
    """One line about the outcome; tolerant of any payload shape."""
    if not isinstance(payload, dict):
        return _text(payload)
    error = payload.get("error")
    if error:
        message = error.get("message") if isinstance(error, dict) else error
        return "error: " + _text(message)
    parts = []
    if payload.get("result") is not None:
        parts.append("result: " + _text(payload["result"]))
    if payload.get("result_location"):
        parts.append("at " + _text(payload["result_location"]))
    return "; ".join(parts) or "-"


def _row(event: StoredEvent) -> str:
    payload = event.payload if isinstance(event.payload, dict) else {}
    event_type = _text(payload.get("type", "?"), 60)
    cells = [
        event.received_at.replace("T", " ").removesuffix("+00:00"),
        event_type,
        _text(payload.get("job", ""), 80),
        _text(payload.get("request_id", ""), 80),
        summarize(event.payload),
        str(event.deliveries),
    ]
    css = html.escape(event_type.replace(".", "-"), quote=True)
    tds = "".join(
        f'<td class="summary">{html.escape(c)}</td>' if i == 4 else f"<td>{html.escape(c)}</td>"
        for i, c in enumerate(cells)
    )
    return f'      <tr class="{css}">{tds}</tr>'


def render_page(events: Sequence[StoredEvent]) -> str:
    template = Template(resources.files("dsbridge.service").joinpath("page.html").read_text("utf-8"))
    rows = "\n".join(_row(e) for e in reversed(events)) or '      <tr><td colspan="6">none yet</td></tr>'
    return template.substitute(count=len(events), rows=rows)


def create_app(
    secrets: str | Sequence[str],
    db_path: str | Path,
    *,
    tolerance_seconds: int = DEFAULT_TOLERANCE_SECONDS,
    callback_path: str = DEFAULT_CALLBACK_PATH,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    enable_faults: bool = True,
) -> FastAPI:
    """The service. Callbacks are accepted at ``callback_path`` and at any path under ``/callbacks/``."""
    try:
        secret_list = parse_secrets(secrets)
    except ValueError as exc:
        raise ValueError(f"no usable callback secret configured (set {ENV_SECRETS}): {exc}") from exc
    store = EventStore(db_path)
    faults = _Faults()
    app = FastAPI(title="dsbridge reference optimization service", version="1")
    app.state.store = store
    app.state.faults = faults

    async def receive(request: Request) -> Response:
        fault = faults.take()
        if fault is not None:
            await asyncio.sleep(fault[1])
            return _error(fault[0], "injected_fault", "fault switch armed via /admin/faults")
        body = await _read_body(request, max_body_bytes)
        if body is None:
            return _error(413, "too_large", f"body exceeds {max_body_bytes} bytes")
        try:
            verify(secret_list, body, request.headers, tolerance_seconds=tolerance_seconds)
        except PayloadError as exc:
            return _error(400, "bad_payload", str(exc))
        except SignatureError as exc:
            return _error(401, "unauthorized", str(exc))
        event_id = request.headers["webhook-id"]
        deliveries = store.record(event_id, request.url.path, _received_headers(request), body)
        status = "stored" if deliveries == 1 else "duplicate"
        return JSONResponse({"status": status, "event_id": event_id, "deliveries": deliveries})

    if not callback_path.startswith("/callbacks/"):
        app.add_api_route(callback_path, receive, methods=["POST"], include_in_schema=True)
    app.add_api_route("/callbacks/{callback_name:path}", receive, methods=["POST"])

    @app.get("/", response_class=HTMLResponse)
    def page() -> HTMLResponse:
        return HTMLResponse(render_page(store.all()))

    @app.get("/events")
    def events() -> list[dict[str, Any]]:
        return [e.as_json() for e in store.all()]

    @app.get("/events/{event_id}")
    def event(event_id: str) -> Response:
        found = store.get(event_id)
        if found is None:
            return _error(404, "not_found", f"no event {event_id!r}")
        return JSONResponse(found.as_json())

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
        "db_path": os.environ.get(ENV_DB, DEFAULT_DB),
        "tolerance_seconds": int(os.environ.get(ENV_TOLERANCE, DEFAULT_TOLERANCE_SECONDS)),
        "callback_path": os.environ.get(ENV_CALLBACK_PATH, DEFAULT_CALLBACK_PATH),
        "max_body_bytes": int(os.environ.get(ENV_MAX_BODY, DEFAULT_MAX_BODY_BYTES)),
        "enable_faults": os.environ.get(ENV_FAULTS, "1").lower() not in ("0", "false", "no"),
    }


def app_from_env() -> FastAPI:
    """The app configured from the environment (``uvicorn --factory dsbridge.service.app:app_from_env``)."""
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
    """Serve until stopped. Secrets come from the environment only; other settings may be overridden."""
    import uvicorn

    config = config_from_env()
    overrides = {"db_path": db_path, "tolerance_seconds": tolerance_seconds, "callback_path": callback_path}
    config.update({k: v for k, v in overrides.items() if v is not None})
    uvicorn.run(create_app(**config), host=host, port=port, log_level=log_level, access_log=False)
