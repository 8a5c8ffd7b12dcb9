"""The FastAPI app: the engine opened once at startup, the routers, the guards, the page."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from importlib import resources

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

from search.server.config import ServerConfig
from search.server.errors import AsciiJSON, install_handlers
from search.server.explaining import Explainers
from search.server.guards import TokenGuard, UploadCap
from search.server.models import Error
from search.server.routes import explain, images, search, status
from search.server.state import EngineHolder

PAGE = resources.files("search.server") / "static"
ERRORS = {code: {"model": Error} for code in (400, 401, 404, 413, 503)}


def create_app(config: ServerConfig, on_ready: Callable[[], None] | None = None) -> FastAPI:
    """The app over `config.index_dir`; `on_ready` runs once the engine is open."""
    config = config.checked()
    holder = EngineHolder(
        config.index_dir, gpu=config.gpu, int8_text=config.text_precision == "int8"
    )

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        holder.open()
        if on_ready is not None:
            on_ready()
        try:
            yield
        finally:
            holder.close()

    app = FastAPI(
        title="photoseek",
        summary="Search your photos by text or image.",
        lifespan=lifespan,
        default_response_class=AsciiJSON,
        responses=ERRORS,  # type: ignore[arg-type]
    )
    app.state.config, app.state.holder = config, holder
    app.state.explainers = Explainers()
    install_handlers(app)
    for router in (search.router, images.router, explain.router, status.router):
        app.include_router(router)
    app.mount("/static", StaticFiles(directory=str(PAGE)), name="static")

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(str(PAGE / "index.html"), headers={"Cache-Control": "no-cache"})

    # The last added runs first: the cap and the token before any route, and CORS (only when
    # asked) before both, so that a browser's preflight needs no token.
    app.add_middleware(TokenGuard, config=config)
    app.add_middleware(UploadCap, limit=config.max_upload_bytes)
    if config.cors:
        app.add_middleware(CORSMiddleware, allow_origins=list(config.cors), allow_methods=["*"],
                           allow_headers=["Authorization"])  # fmt: skip
    return app
