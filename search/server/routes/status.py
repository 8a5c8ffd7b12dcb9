"""`/api/status` (the index and the server) and `/api/login` (the page's token → a cookie)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Response

from search.server.deps import ConfigDep, holder
from search.server.errors import error_response
from search.server.guards import TOKEN_COOKIE
from search.server.models import Login, Status
from search.server.state import EngineHolder
from search.tools.status import index_status

router = APIRouter(prefix="/api", tags=["server"])


@router.get("/status", response_model=Status)
def status(config: ConfigDep, holder: Annotated[EngineHolder, Depends(holder)]) -> Status:
    """What the index holds (as `photoseek status --json`) and how the server runs."""
    holder.engine()  # 503 while there is no index; reopens after a re-index
    return Status(
        index=index_status(holder.directory),
        generation=holder.generation,
        reranker=config.reranker,
        text_precision=config.text_precision,
        token_required=bool(config.token),
        max_upload_bytes=config.max_upload_bytes,
    )


@router.post("/login", status_code=204, response_class=Response)
def login(body: Login, config: ConfigDep) -> Response:
    """Trade the token for an HttpOnly cookie, so the page's images load without headers."""
    if not config.token_matches(body.token):
        return error_response(401, "wrong token")
    response = Response(status_code=204)
    if config.token:
        response.set_cookie(
            TOKEN_COOKIE, config.token, httponly=True, samesite="strict", path="/api"
        )
    return response
