"""The admin token that guards everything but `/health` and the signed callbacks.

Why: the event list holds results and signed bodies, and `/admin/faults` can make the service refuse
every callback; neither may answer whoever reaches the port. Callbacks carry their own proof (the
signature) and `/health` tells nothing, so those two stay open. The guard is an ASGI middleware, so
a route added later is closed unless it is added to the open list on purpose.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable
from urllib.parse import parse_qs

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

ENV_ADMIN_TOKEN = "DSBRIDGE_SERVICE_ADMIN_TOKEN"
MIN_TOKEN_CHARS = 16


def check_admin_token(token: str | None) -> str:
    """The token, or `ValueError` naming the variable when there is none or it is too weak to use."""
    token = (token or "").strip()
    if not token:
        raise ValueError(
            f"no admin token configured: set {ENV_ADMIN_TOKEN} (for example to the output of "
            "`python -c 'import secrets; print(secrets.token_urlsafe(32))'`)"
        )
    if len(token) < MIN_TOKEN_CHARS or any(c.isspace() for c in token):
        raise ValueError(f"{ENV_ADMIN_TOKEN} must be at least {MIN_TOKEN_CHARS} characters without spaces")
    return token


class AdminTokenGuard:
    """Answers 401 unless the request is open (`is_open(path)`) or presents the token.

    The token comes as `Authorization: Bearer <token>`, or as `?token=` on the paths in
    `query_token_paths` (the HTML page, so a printed link works in a browser). Compared in constant
    time.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        token: str,
        is_open: Callable[[str], bool],
        query_token_paths: frozenset[str] = frozenset(),
    ) -> None:
        self.app = app
        self._token = check_admin_token(token).encode()
        self._is_open = is_open
        self._query_token_paths = query_token_paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self._is_open(scope["path"]):
            await self.app(scope, receive, send)
            return
        presented = self._presented(scope)
        if presented is not None and hmac.compare_digest(presented.encode(), self._token):
            await self.app(scope, receive, send)
            return
        detail = (
            f"admin token required: send Authorization: Bearer <token> (the service's {ENV_ADMIN_TOKEN})"
            if presented is None
            else "admin token does not match"
        )
        answer = JSONResponse(
            {"error": "unauthorized", "detail": detail}, status_code=401, headers={"WWW-Authenticate": "Bearer"}
        )
        await answer(scope, receive, send)

    def _presented(self, scope: Scope) -> str | None:
        for name, value in scope["headers"]:
            if name == b"authorization":
                scheme, _, credentials = value.decode("latin-1").partition(" ")
                if scheme.lower() == "bearer" and credentials.strip():
                    return credentials.strip()
        if scope["path"] in self._query_token_paths:
            tokens = parse_qs(scope.get("query_string", b"").decode("latin-1")).get("token")
            if tokens:
                return tokens[0]
        return None
