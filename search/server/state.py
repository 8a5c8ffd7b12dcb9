"""The server's one engine: opened once, shared by every request, reopened after a re-index.

The catalog has no generation counter yet, so a re-index is noticed by what it leaves on disk:
the vector file (`vectors.faiss`, replaced atomically by every indexing run that changed
anything: a new inode, mtime and size), the query towers' manifest (a new model), and the
catalog's `generation` meta value once the indexer records one. Cached thumbnails are keyed by
row id, and a changed file gets a new row, so they stay valid across re-indexes.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

from indexer.errors import IndexNotFound, PhotoseekError
from indexer.locations import TOWERS_DIR
from indexer.locations import index_dir as resolve_index
from indexer.store.vector_store import VECTORS_FILE

if TYPE_CHECKING:
    from search.engine import Engine

log = logging.getLogger(__name__)

Fingerprint = tuple[object, ...]
RETRY_S = 1.0  # after a failed open, how long to keep what there is before trying again


class EngineHolder:
    """Hands out the current engine; reopens it when the index on disk has changed."""

    def __init__(
        self, index_dir: str | os.PathLike[str] | None, gpu: bool = False, int8_text: bool = False
    ) -> None:
        self.directory: Path = resolve_index(index_dir)
        self.gpu = gpu  # searches may use a GPU copy of the index (`photoseek serve --gpu`)
        self.int8_text = int8_text  # queries embedded by the text tower's int8 copy (text_int8)
        self._engine: Engine | None = None
        self._seen: Fingerprint | None = None
        self._missing: PhotoseekError | None = None
        self._missing_at = 0.0
        self._lock = threading.Lock()
        self.generation = 0  # how many times an engine was opened: shown by /api/status

    def open(self) -> None:
        """Open the engine now (at startup); a missing index is remembered, not raised."""
        with self._lock:
            self._reopen()

    def engine(self) -> Engine:
        """The engine for the index as it is on disk now; while there is none, the error that
        opening it last raised (IndexNotFound for a missing index)."""
        seen = self.fingerprint()
        if self._engine is None or seen != self._seen:
            with self._lock:
                retry = time.monotonic() - self._missing_at > RETRY_S
                if retry and (self._engine is None or seen != self._seen):
                    self._reopen()
        if self._engine is None:
            raise self._missing or IndexNotFound(f"no photoseek index in {self.directory}")
        return self._engine

    def fingerprint(self) -> Fingerprint:
        """What changes on disk when the index does."""
        parts: list[object] = [_stat(self.directory / VECTORS_FILE)]
        parts.append(_stat(self._towers_file()))
        if self._engine is not None:
            parts.append(self._engine.catalog.get_meta("generation"))
        return tuple(parts)

    def _towers_file(self) -> Path:
        return self.directory / TOWERS_DIR / "towers.json"

    def close(self) -> None:
        with self._lock:
            if self._engine is not None:
                self._engine.close()
                self._engine = None

    def _reopen(self) -> None:
        from search.server.batching import CoalescingKnn, CoalescingTextEncoder
        from search.server.text_int8 import Int8TextEncoder
        from search.server.threads import OneThreadKnn
        from search.wiring import Preload, build_engine

        old = self._engine
        # The same towers on disk: the loaded encoders carry over, and a re-index's commits
        # do not each cost a load of the towers (seconds of CPU taken from the queries).
        same_towers = self._seen is not None and self._seen[1] == _stat(self._towers_file())
        try:
            fresh = build_engine(
                self.directory, preload=Preload(text=True, image=True), gpu=self.gpu,
                text_class=Int8TextEncoder if self.int8_text else CoalescingTextEncoder,
                reuse=old if same_towers else None,
            )  # fmt: skip
        except PhotoseekError as e:  # e.g. mid re-index: keep serving the engine there is
            self._missing, self._missing_at = e, time.monotonic()
            log.warning("cannot open the index: %s", e)
            return
        if not self.gpu:
            one_thread = OneThreadKnn(fresh.knn)
            fresh.knn = CoalescingKnn(one_thread) if fresh.store.is_exact() else one_thread
        self._engine, self._missing = fresh, None
        self._seen = self.fingerprint()  # now with the new catalog's generation in it
        self.generation += 1
        if old is not None:
            log.info("index changed on disk: reopened %s", self.directory)
            old.close()  # requests still holding it finish: a disposed pool reconnects


def _stat(path: Path) -> tuple[int, int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_ino, st.st_mtime_ns, st.st_size
