"""ASGI guards in front of the app: the upload cap, enforced as the body streams in, and the
token check for every `/api` call.

The cap sits below the framework so that a body announcing too many bytes is refused before
any of it is read, and a chunked body is cut off at the first byte over the limit; neither is
ever held whole in memory or spooled to disk.
"""

from __future__ import annotations

from http.cookies import CookieError, SimpleCookie

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from search.server.config import ServerConfig
from search.server.errors import error_response

TOKEN_COOKIE = "photoseek_token"
OPEN_PATHS = ("/api/login",)  # reachable without the token: where the page trades it for a cookie


class UploadCap:
    """413 for a request body over `limit` bytes, judged by its header or as it arrives."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _header(scope, b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.limit):
            await error_response(413, self._message())(scope, receive, send)
            return
        received = 0

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.limit:
                raise HTTPException(413, self._message())  # the framework answers it as JSON
            return message

        await self.app(scope, counted, send)

    def _message(self) -> str:
        return f"request body too large: the limit is {self.limit} bytes"


class TokenGuard:
    """401 for an `/api` request without the server's token (header or cookie)."""

    def __init__(self, app: ASGIApp, config: ServerConfig) -> None:
        self.app = app
        self.config = config

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        guarded = scope["type"] == "http" and self.config.token and path.startswith("/api")
        if guarded and path not in OPEN_PATHS and not self.config.token_matches(_token(scope)):
            response = error_response(401, "missing or wrong token", {"WWW-Authenticate": "Bearer"})
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return value.decode("latin-1").strip()
    return None


def _token(scope: Scope) -> str | None:
    """The request's token: `Authorization: Bearer T`, else the login cookie."""
    auth = _header(scope, b"authorization")
    if auth and auth.lower().startswith("bearer "):
        return auth[7:].strip()
    cookie = SimpleCookie()
    try:
        cookie.load(_header(scope, b"cookie") or "")
    except CookieError:  # a malformed cookie header is a request without a token
        return None
    morsel = cookie.get(TOKEN_COOKIE)
    return morsel.value if morsel else None
