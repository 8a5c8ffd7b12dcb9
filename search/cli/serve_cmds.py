"""`photoseek serve`: the HTTP API and web page, on loopback unless a token is given."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from search.cli.options import IndexOpt


def register(app: typer.Typer) -> None:
    app.command("serve")(serve)


def serve(
    index_dir: IndexOpt = None,
    host: Annotated[str, typer.Option(help="Address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port (0: any free port)")] = 8000,
    token: Annotated[
        str | None,
        typer.Option(help="Require this token on every API call [default: $PHOTOSEEK_TOKEN]"),
    ] = None,
    reranker: Annotated[str, typer.Option(help="itm (the index's ITM head) or none")] = "itm",
    max_upload_mb: Annotated[float, typer.Option(help="Largest image upload, in MB")] = 25,
    cors: Annotated[
        list[str] | None, typer.Option(help="Allow this web origin to call the API (repeatable)")
    ] = None,
    open_page: Annotated[bool, typer.Option("--open", help="Open the page in a browser")] = False,
    gpu: Annotated[
        bool, typer.Option("--gpu", help="Search a GPU copy of the index where it pays (faiss-gpu)")
    ] = False,
    text_precision: Annotated[
        str, typer.Option(help="Query text tower: fp32 (exact) or int8 (less CPU, not the same)")
    ] = "fp32",
) -> None:
    """Serve a search page and JSON API (docs at /docs); prints `serving URL` when ready."""
    from search.server.config import ServerConfig, token_from_env
    from search.server.run import bind, url
    from search.server.run import serve as run_server

    config = ServerConfig(
        index_dir=index_dir, host=host, port=port, token=token_from_env(token),
        reranker=reranker, max_upload_bytes=int(max_upload_mb * 1024 * 1024),
        cors=tuple(cors or ()), gpu=gpu, text_precision=text_precision,
    ).checked()  # fmt: skip
    sock = bind(config)
    address = url(sock)

    def ready() -> None:
        sys.stdout.write(f"serving {address}\n")
        sys.stdout.flush()
        if open_page:
            import webbrowser

            webbrowser.open(address)

    run_server(config, sock, ready)
