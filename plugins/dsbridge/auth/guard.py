"""Records the HTTP request being served, for auth-manager decisions that depend on it.

Airflow asks its auth manager about a method and an entity, never about the endpoint or the body,
so the manager reads them here. This is a pure ASGI middleware: it sets a ContextVar around the
app, and FastAPI copies the context into the worker threads that run sync dependencies (where the
auth checks run). The body of a PATCH on a DAG run is read up to a bound and handed to the app
unchanged, message by message.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Generator
from contextlib import contextmanager
from contextvars import ContextVar

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from dsbridge.auth.policy import ApiRequest, records_body

# A cancel body is 19 bytes; anything much larger is not one.
MAX_BODY = 4096
MAX_MESSAGES = 64

_current: ContextVar[ApiRequest | None] = ContextVar("dsbridge_api_request", default=None)


def current_request() -> ApiRequest | None:
    """The request being served in this context, or None outside of one."""
    return _current.get()


@contextmanager
def serving(request: ApiRequest) -> Generator[None]:
    """`current_request()` is `request` inside the block (in this context and copies of it)."""
    token = _current.set(request)
    try:
        yield
    finally:
        _current.reset(token)


def route_path(scope: Scope) -> str:
    """The path as the router matches it: without the app's root path."""
    path, root = str(scope["path"]), str(scope.get("root_path") or "")
    return path[len(root) :] if root and path.startswith(root + "/") else path


async def read_bounded(receive: Receive, limit: int = MAX_BODY) -> tuple[list[Message], bytes | None]:
    """The messages read, and the whole body if it ended within `limit` bytes (else None)."""
    messages: list[Message] = []
    size = 0
    while len(messages) < MAX_MESSAGES:
        message = await receive()
        messages.append(message)
        if message["type"] != "http.request":
            return messages, None
        size += len(message.get("body", b""))
        if size > limit:
            return messages, None
        if not message.get("more_body", False):
            return messages, b"".join(m.get("body", b"") for m in messages)
    return messages, None


def replaying(messages: list[Message], receive: Receive) -> Receive:
    """A `receive` that gives back `messages` first, then reads on from the client."""
    pending = deque(messages)

    async def replay() -> Message:
        return pending.popleft() if pending else await receive()

    return replay


class RequestGuard:
    """ASGI middleware: `current_request()` is the request being served, wherever it is asked."""

    def __init__(self, app: ASGIApp, max_body: int = MAX_BODY) -> None:
        self.app = app
        self.max_body = max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        method, path = str(scope["method"]), route_path(scope)
        body = None
        if records_body(method, path):
            messages, body = await read_bounded(receive, self.max_body)
            receive = replaying(messages, receive)
        query = bytes(scope.get("query_string", b"")).decode("latin-1")
        with serving(ApiRequest(method, path, query, body)):
            await self.app(scope, receive, send)
