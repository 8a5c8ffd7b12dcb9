"""Run the app on uvicorn: bind first (so `--port 0` knows its port), then serve until stopped."""

from __future__ import annotations

import socket
from collections.abc import Callable

from indexer.errors import BadInput
from search.server.config import ServerConfig


def bind(config: ServerConfig) -> socket.socket:
    """A listening socket on the config's host and port (0: a free one), or BadInput."""
    family = socket.AF_INET6 if ":" in config.host else socket.AF_INET
    # IPPROTO_TCP named, not 0: asyncio sets TCP_NODELAY only on sockets that say they are TCP,
    # and without it Nagle holds each response's body for the client's delayed ACK (40 ms).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((config.host.strip("[]"), config.port))
    except OSError as e:
        sock.close()
        raise BadInput(f"cannot listen on {config.host}:{config.port}: {e.strerror}") from None
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def url(sock: socket.socket) -> str:
    """The page's address for a bound socket: `http://HOST:PORT/`."""
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}/" if ":" in host else f"http://{host}:{port}/"


def serve(config: ServerConfig, sock: socket.socket, on_ready: Callable[[], None]) -> None:
    """Serve on `sock` until interrupted; `on_ready` runs once the index is open."""
    import uvicorn

    from search.server.app import create_app

    app = create_app(config, on_ready)
    server = uvicorn.Server(
        uvicorn.Config(app, log_level="warning", access_log=False, timeout_graceful_shutdown=5)
    )
    server.run(sockets=[sock])
