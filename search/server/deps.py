"""What routes are handed by `Depends`: the current engine, the config, the search fields, one
live row by id."""

from __future__ import annotations

from typing import Annotated, Any, get_origin

from fastapi import Depends, Path, Request
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError

from indexer.store.catalog import OK, ImageRow
from search.engine import Engine
from search.server.config import ServerConfig
from search.server.errors import NotFound
from search.server.models import SearchFields
from search.server.state import EngineHolder


async def holder(request: Request) -> EngineHolder:  # async: no thread hop for a lookup
    return request.app.state.holder


async def config(request: Request) -> ServerConfig:
    return request.app.state.config


def engine(holder: Annotated[EngineHolder, Depends(holder)]) -> Engine:
    """The engine over the index as it is on disk now (reopened after a re-index)."""
    return holder.engine()


async def search_fields(request: Request) -> SearchFields:  # async: no thread hop to parse
    """The query string's `SearchFields`, validated by pydantic in one call. FastAPI's own
    parsing of a query model (`Annotated[SearchFields, Query()]`) walks every field's annotation
    on every request: 0.7 ms of CPU a search, a third of a warm one's. Invalid fields raise what
    FastAPI raises (RequestValidationError: a 400 with the field named)."""
    params = request.query_params
    values = {name: params.getlist(name) if name in _LISTS else params[name] for name in params}
    try:
        return SearchFields.model_validate(values)
    except ValidationError as e:
        raise RequestValidationError(e.errors(include_url=False)) from None


def query_parameters(model: type[SearchFields]) -> list[dict[str, Any]]:
    """OpenAPI's query parameters for `model`'s fields, as `Query()` on the model lists them:
    routes that take `SearchFieldsDep` document them with `openapi_extra`."""
    schema = model.model_json_schema()
    return [
        {"name": name, "in": "query", "required": name in schema.get("required", ()),
         "description": field.get("description", ""),
         "schema": {key: value for key, value in field.items() if key != "description"}}
        for name, field in schema["properties"].items()
    ]  # fmt: skip


_LISTS = frozenset(
    name for name, f in SearchFields.model_fields.items() if get_origin(f.annotation) is list
)
SEARCH_PARAMETERS = {"parameters": query_parameters(SearchFields)}
EngineDep = Annotated[Engine, Depends(engine)]
SearchFieldsDep = Annotated[SearchFields, Depends(search_fields)]
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
