"""`/api/images/{id}/…`: one indexed image by catalog id — its thumbnail, its file, the images
like it, and the texts that describe it. An id of a failed or removed row is 404."""

from __future__ import annotations

import mimetypes
import os
import time
from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import FileResponse

from indexer.errors import BadInput
from search.server.deps import SEARCH_PARAMETERS, EngineDep, ImageId, SearchFieldsDep, live_row
from search.server.errors import NotFound
from search.server.models import Results, Text, Texts
from search.server.results import elapsed_ms, results
from search.tools.describe import describe as describe_image
from search.tools.similar import similar as similar_images
from search.tools.thumbnails import SIZES, cached_webp

router = APIRouter(prefix="/api/images", tags=["images"])
K = Annotated[int, Query(ge=1, le=1000, description="Number of results")]
WEEK = "private, max-age=604800"  # a row's id names one file version forever


@router.get("/{image_id}/similar", response_model=Results, openapi_extra=SEARCH_PARAMETERS)
def similar(image_id: ImageId, engine: EngineDep, fields: SearchFieldsDep) -> Results:
    """The images most like this one (its stored vector: nothing is decoded); `q` is unused,
    the other search fields filter as in a search."""
    started = time.perf_counter()
    row = live_row(engine, image_id)
    hits = similar_images(engine, row, fields.offset + fields.k, fields.filters())
    found = results(hits[fields.offset :], first_rank=fields.offset + 1)
    return Results(results=found, took_ms=elapsed_ms(started))


@router.get("/{image_id}/thumbnail", response_class=FileResponse)
def thumbnail(
    image_id: ImageId,
    engine: EngineDep,
    size: Annotated[int, Query(description="Longest side: 256 or 512")] = 256,
) -> FileResponse:
    """A WebP thumbnail (longest side `size`), made once and cached in the index folder."""
    if size not in SIZES:
        raise BadInput(f"thumbnail size must be one of {', '.join(map(str, SIZES))}, got {size}")
    row = live_row(engine, image_id)
    path = cached_webp(engine.directory, row.id, row.path, size)
    if path is None:
        raise NotFound(f"image {image_id} cannot be read now")
    return FileResponse(path, media_type="image/webp", headers={"Cache-Control": WEEK})


@router.get("/{image_id}/file", response_class=FileResponse)
def original(image_id: ImageId, engine: EngineDep) -> FileResponse:
    """The original file, as indexed."""
    row = live_row(engine, image_id)
    name = os.fsdecode(row.path)
    if not os.path.isfile(row.path):
        raise NotFound(f"image {image_id} is not on disk now")
    media = mimetypes.guess_type(name)[0] or "application/octet-stream"
    return FileResponse(name, media_type=media)


@router.get("/{image_id}/describe", response_model=Texts)
def describe(image_id: ImageId, engine: EngineDep, k: K = 5, vocab: str | None = None) -> Texts:
    """The texts of a built-in vocabulary that best match this image (image→text)."""
    started = time.perf_counter()
    row = live_row(engine, image_id)
    hits = describe_image(engine, row.path, k, vocab)
    texts = [Text(rank=r, text=h.text, score=round(h.score, 6)) for r, h in enumerate(hits, 1)]
    return Texts(texts=texts, took_ms=elapsed_ms(started))
