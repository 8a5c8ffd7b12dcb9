"""`/api/images/{id}/explain?q=TEXT`: where in one indexed photo a text matches — the Grad-CAM
heatmap of the index model's ITM head, as `photoseek explain` draws it (PNG), or its maps and
peaks as `photoseek explain --json` writes them."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response

from indexer.errors import BadInput
from search.server.deps import EngineDep, ImageId, live_row
from search.server.errors import AsciiJSON
from search.server.explaining import Explainers
from search.tools.explain import read_photo

router = APIRouter(prefix="/api/images", tags=["images"])
PNG: dict[int | str, dict[str, Any]] = {200: {"content": {"image/png": {}, "application/json": {}},
             "description": "The heatmap over the photo (PNG), or its maps (JSON)"}}  # fmt: skip


async def explainers(request: Request) -> Explainers:
    return request.app.state.explainers


@router.get("/{image_id}/explain", response_class=Response, responses=PNG)
def explain(
    image_id: ImageId,
    engine: EngineDep,
    models: Annotated[Explainers, Depends(explainers)],
    q: Annotated[str, Query(description="The text to locate in the photo")] = "",
    format: Annotated[Literal["png", "json"], Query(description="png or json")] = "png",
    layer: Annotated[
        int | None, Query(ge=-64, le=64, description="The head's fusion layer [default: 0]")
    ] = None,
) -> Response:
    """Where in this photo the text `q` matches: Grad-CAM on the ITM head's cross-attention
    (needs the index's model folder, with its head; 400 otherwise)."""
    text = " ".join(q.split())
    if not text:
        raise BadInput("q: give the text to locate in the photo")
    row = live_row(engine, image_id)
    data, ext = read_photo(Path(os.fsdecode(row.path)))
    done = models.explain(engine.directory, data, ext, text, layer, png=format == "png")
    if format == "png":
        return Response(done.png, media_type="image/png", headers={"Cache-Control": "no-store"})
    body: dict[str, Any] = {"id": image_id, **done.explanation.to_json()}
    return AsciiJSON(body)
