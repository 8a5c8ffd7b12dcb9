"""What routes are handed by `Depends`: the current engine, the config, one live row by id."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Path, Request

from indexer.store.catalog import OK, ImageRow
from search.engine import Engine
from search.server.config import ServerConfig
from search.server.errors import NotFound
from search.server.state import EngineHolder


async def holder(request: Request) -> EngineHolder:  # async: no thread hop for a lookup
    return request.app.state.holder


async def config(request: Request) -> ServerConfig:
    return request.app.state.config


def engine(holder: Annotated[EngineHolder, Depends(holder)]) -> Engine:
    """The engine over the index as it is on disk now (reopened after a re-index)."""
    return holder.engine()


EngineDep = Annotated[Engine, Depends(engine)]
HolderDep = Annotated[EngineHolder, Depends(holder)]
ConfigDep = Annotated[ServerConfig, Depends(config)]
ImageId = Annotated[int, Path(ge=1, le=2**62, description="A catalog id from a search result")]


def live_row(engine: Engine, image_id: int) -> ImageRow:
    """The catalog row `image_id` if it is a live image; 404 for unknown, failed or removed.

    Files are only ever reached this way: by an id the catalog holds, never by a client path.
    """
    row = engine.catalog.rows_by_id([image_id]).get(image_id)
    if row is None or row.status != OK:
        raise NotFound(f"no image with id {image_id}")
    return row
