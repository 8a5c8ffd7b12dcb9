"""`/api/search`: text queries (GET) and image queries (POST, multipart), the CLI's semantics.

The words of `q` go through the CLI's own `parse_terms`, so `+`, `-` and weights mean the same;
but a word naming a file on the server is refused, as the server reads files by catalog id
only: an image query is an upload.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from typing import Annotated

from fastapi import APIRouter, File, Form, UploadFile
from fastapi.responses import Response

from indexer.errors import BadInput
from indexer.media.discovery import EXTENSIONS, extension
from search.engine import Engine
from search.query import Term, parse_terms
from search.server.config import ServerConfig
from search.server.deps import (
    SEARCH_PARAMETERS,
    ConfigDep,
    EngineDep,
    HolderDep,
    SearchFieldsDep,
)
from search.server.errors import AsciiJSON
from search.server.models import Results, SearchFields
from search.server.results import elapsed_ms, results

router = APIRouter(prefix="/api", tags=["search"])


@router.get("/search", response_model=Results, openapi_extra=SEARCH_PARAMETERS)
def search_text(fields: SearchFieldsDep, holder: HolderDep, config: ConfigDep) -> Response:
    """The images that best match the text query `q`."""
    # The hot path under load, so it skips two costs the answer does not need: the engine is
    # fetched here rather than by a sync dependency (a second thread hop per request), and
    # the body is written from the `Results` built here instead of validated again against
    # `response_model`, which stays the documented schema. The JSON is the same either way.
    found = run_search(holder.engine(), config, text_terms(fields.q), fields)
    return AsciiJSON(found.model_dump(mode="json"))


@router.post("/search", response_model=Results)
def search_image(
    image: Annotated[UploadFile, File(description="The query image")],
    fields: Annotated[SearchFields, Form()],
    engine: EngineDep,
    config: ConfigDep,
) -> Results:
    """The images that best match an uploaded image (plus any text terms in `q`)."""
    with tempfile.TemporaryDirectory(prefix="photoseek-upload-") as folder:
        path = os.path.join(folder, "upload" + _suffix(image.filename))
        with open(path, "wb") as out:
            shutil.copyfileobj(image.file, out, 1 << 20)
        terms = text_terms(fields.q, required=False) + parse_terms([], [path])
        try:
            return run_search(engine, config, terms, fields)
        except BadInput as e:  # name the upload, not the temporary file holding it
            raise BadInput(str(e).replace(path, "the uploaded image")) from None


def text_terms(q: str, required: bool = True) -> list[Term]:
    """The terms of `q`; text only (a word naming a server file is refused, not read)."""
    if not q.strip() and not required:
        return []
    terms = parse_terms(q.split())
    if any(term.image is not None for term in terms):
        raise BadInput("q takes text only: search by image by uploading it (POST /api/search)")
    return terms


def run_search(
    engine: Engine, config: ServerConfig, terms: list[Term], fields: SearchFields
) -> Results:
    """One search, as `photoseek search` runs it; `offset` skips that many best results."""
    if fields.rerank and config.reranker == "none":
        raise BadInput("reranking is off on this server (--reranker none)")
    started = time.perf_counter()
    wanted = fields.offset + fields.k
    hits = engine.search(
        terms,
        k=wanted,
        filters=fields.filters(),
        threshold=fields.threshold,
        rerank_k=fields.rerank_k if fields.rerank else None,
        text_match=fields.text_match,
    )
    found = results(hits[fields.offset :], first_rank=fields.offset + 1)
    return Results(results=found, took_ms=elapsed_ms(started))


def _suffix(filename: str | None) -> str:
    """The upload's extension when it is one photoseek reads, so RAW files decode as RAW;
    otherwise none, and the decoder goes by the bytes alone."""
    ext = extension(os.fsencode(filename or ""))
    return f".{ext}" if ext in EXTENSIONS else ".upload"
