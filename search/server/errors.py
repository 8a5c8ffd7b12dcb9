"""Every error as `{"error": "one line"}` with its status, and the JSON the API writes.

Paths in JSON are `os.fsdecode` strings, as the CLI's `--json` writes them: undecodable bytes
are lone surrogates, which only ASCII JSON (`\\udcXX` escapes) can carry.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from indexer.errors import BadInput, IndexNotFound, ModelMismatch, PhotoseekError, UnreadableImage

log = logging.getLogger(__name__)

STATUS = {BadInput: 400, UnreadableImage: 400, IndexNotFound: 503, ModelMismatch: 503}


class AsciiJSON(JSONResponse):
    """JSON with non-ASCII escaped, so any file name (even undecodable bytes) survives."""

    def render(self, content: Any) -> bytes:
        return json.dumps(content, ensure_ascii=True, allow_nan=False).encode("ascii")


class NotFound(HTTPException):
    """An id the catalog does not hold as a live image."""

    def __init__(self, what: str) -> None:
        super().__init__(404, what)


def error_response(status: int, message: str, headers: dict[str, str] | None = None) -> AsciiJSON:
    line = " ".join(str(message).split()) or "error"  # one line, whatever the message held
    return AsciiJSON({"error": line}, status_code=status, headers=headers)


def install_handlers(app: FastAPI) -> None:
    """Map library errors, HTTP errors and validation errors to the one JSON shape."""

    @app.exception_handler(PhotoseekError)
    async def library_error(_request: Request, exc: PhotoseekError) -> AsciiJSON:
        status = next((code for kind, code in STATUS.items() if isinstance(exc, kind)), 500)
        return error_response(status, str(exc))

    @app.exception_handler(HTTPException)
    async def http_error(_request: Request, exc: HTTPException) -> AsciiJSON:
        return error_response(exc.status_code, str(exc.detail), getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def invalid(_request: Request, exc: RequestValidationError) -> AsciiJSON:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(part) for part in first.get("loc", ()) if part not in ("query",))
        return error_response(400, f"{where}: {first.get('msg', 'invalid request')}")

    @app.exception_handler(Exception)
    async def crashed(_request: Request, exc: Exception) -> AsciiJSON:
        log.exception("internal error")
        return error_response(500, f"internal error: {type(exc).__name__}")
