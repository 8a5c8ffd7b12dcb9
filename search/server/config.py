"""What `photoseek serve` runs with, and the safety rules checked before it binds."""

from __future__ import annotations

import ipaddress
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from indexer.errors import BadInput

DEFAULT_UPLOAD_BYTES = 25 * 1024 * 1024
TOKEN_ENV = "PHOTOSEEK_TOKEN"
RERANKERS = ("itm", "none")  # the index model's own ITM head, or no reranking at all
TEXT_PRECISIONS = ("fp32", "int8")  # the text tower as exported, or its int8 copy (text_int8)


@dataclass(frozen=True)
class ServerConfig:
    """The server's settings; `index_dir` None means $PHOTOSEEK_INDEX or the XDG data folder."""

    index_dir: Path | None = None
    host: str = "127.0.0.1"
    port: int = 8000
    token: str | None = None
    reranker: str = "itm"
    max_upload_bytes: int = DEFAULT_UPLOAD_BYTES
    cors: tuple[str, ...] = ()
    gpu: bool = False  # searches may use a GPU copy of the index, where that pays
    text_precision: str = "fp32"  # "int8": a third of the CPU per query, not the same model

    def checked(self) -> ServerConfig:
        """This config, or a BadInput naming the one setting that makes it unsafe or invalid."""
        if self.reranker not in RERANKERS:
            raise BadInput(f"unknown reranker {self.reranker!r}; known: {', '.join(RERANKERS)}")
        if self.text_precision not in TEXT_PRECISIONS:
            raise BadInput(f"unknown text precision {self.text_precision!r}; known: "
                           f"{', '.join(TEXT_PRECISIONS)}")  # fmt: skip
        if self.max_upload_bytes < 1:
            raise BadInput(f"the upload limit must be at least 1 byte, got {self.max_upload_bytes}")
        if not 0 <= self.port <= 65535:
            raise BadInput(f"port must be 0-65535, got {self.port}")
        if self.token is not None and not self.token.strip():
            raise BadInput("an empty --token protects nothing")
        if not is_loopback(self.host) and not self.token:
            raise BadInput(
                f"refusing to serve on {self.host} without a token: anyone on the network could "
                f"read your photos; pass --token TOKEN (or set {TOKEN_ENV}), or bind 127.0.0.1"
            )
        if self.gpu:
            check_gpu()
        return self

    def token_matches(self, given: str | None) -> bool:
        """Whether a request's token is the server's; constant-time, and True with no token."""
        if not self.token:
            return True
        return given is not None and secrets.compare_digest(given.encode(), self.token.encode())


def is_loopback(host: str) -> bool:
    """Whether binding `host` keeps the server on this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name other than localhost may resolve to anything


def check_gpu() -> None:
    """BadInput unless FAISS here is a GPU build that sees a GPU: `--gpu` is refused at start,
    not found out later as searches that quietly stay on the CPU."""
    import faiss

    gpus = faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0
    if gpus < 1:
        raise BadInput(
            "--gpu: FAISS sees no GPU here (a CPU-only FAISS build, or no GPU on this "
            "machine); install faiss-gpu on a GPU machine, or drop --gpu"
        )


def token_from_env(token: str | None) -> str | None:
    """The --token value, else $PHOTOSEEK_TOKEN, else None."""
    return token if token is not None else (os.environ.get(TOKEN_ENV) or None)
