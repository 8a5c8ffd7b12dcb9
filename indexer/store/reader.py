"""A read-only view of the catalog through the standard library's sqlite3, for cold queries.

`photoseek search` without filters reads a handful of things from the catalog (its model, its
generation, the rows it returns), and importing SQLAlchemy alone costs more than that query's
search. This reader opens the file exactly as `Catalog.open(read_only=True)` does (`mode=ro`,
`immutable=1` on read-only media, the same pragmas, the same schema check) and answers the read
methods the engine uses with the same results. Names come from `indexer.store.layout`, which the
SQLAlchemy schema shares; values are always bound parameters. It never writes.
"""

from __future__ import annotations

import sqlite3
import urllib.parse
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from indexer.store.layout import (
    CATALOG_FILE,
    ERROR,
    GENERATION,
    IMAGE_COLUMNS,
    OFFLINE,
    OK,
    READ_PRAGMAS,
    ImageRow,
    check_applied,
    read_only_uri,
)

CHUNK = 500  # ids per IN (...): well under SQLite's limit on bound parameters

# Built once from the shared names; only placeholders vary, and values are bound to them.
_ROWS = f"SELECT {', '.join(IMAGE_COLUMNS)} FROM images WHERE id IN "  # noqa: S608
_VECTORS = "SELECT image_id, vector FROM embeddings WHERE image_id IN "
_TOKENS = "SELECT image_id, tokens FROM itm_tokens WHERE image_id IN "
_CAPTIONS = "SELECT image_id, caption FROM image_text WHERE caption IS NOT NULL AND image_id IN "


class CatalogReader:
    """The read methods of `Catalog` that a query needs, over one sqlite3 connection."""

    read_only = True

    def __init__(self, conn: sqlite3.Connection, path: Path) -> None:
        self._conn = conn
        self.path = path

    @classmethod
    def open(cls, directory: Path) -> CatalogReader:
        """The catalog in `directory`, read-only; a catalog of another schema is refused
        (`CatalogTooNew`, `CatalogNeedsUpgrade`) as a read-only `Catalog.open` refuses it."""
        path = directory / CATALOG_FILE
        database, query = read_only_uri(path)
        # Autocommit: each read method below is one explicit transaction, one snapshot.
        conn = sqlite3.connect(f"{database}?{urllib.parse.urlencode(query)}", uri=True,
                               isolation_level=None)  # fmt: skip
        try:
            for pragma in READ_PRAGMAS:
                conn.execute(pragma)
            reader = cls(conn, path)
            check_applied(reader._applied_migrations(), path, read_only=True)
        except BaseException:
            conn.close()
            raise
        return reader

    def close(self) -> None:
        self._conn.close()

    @contextmanager
    def _reading(self) -> Iterator[sqlite3.Connection]:
        """One read transaction: what a method reads comes from one snapshot of the file."""
        self._conn.execute("BEGIN")
        try:
            yield self._conn
        finally:
            self._conn.execute("ROLLBACK")

    def _applied_migrations(self) -> set[str]:
        with self._reading() as conn:
            has_table = conn.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'migrations'"
            ).fetchone()
            return (
                {name for (name,) in conn.execute("SELECT name FROM migrations")}
                if has_table
                else set()
            )

    def get_meta(self, key: str) -> str | None:
        with self._reading() as conn:
            row = conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else row[0]

    def generation(self) -> int:
        """The catalog's change counter (`Catalog.generation`)."""
        return int(self.get_meta(GENERATION) or 0)

    def counts(self) -> dict[str, int]:
        with self._reading() as conn:
            rows = conn.execute("SELECT status, count(*) FROM images GROUP BY status")
            by_status: dict[str, int] = dict(rows.fetchall())
        return {
            "images": by_status.get(OK, 0),
            "errors": by_status.get(ERROR, 0),
            "offline": by_status.get(OFFLINE, 0),
        }

    def rows_by_id(self, ids: Iterable[int]) -> dict[int, ImageRow]:
        found: dict[int, ImageRow] = {}
        for row in self._chunked(_ROWS, [int(i) for i in ids]):
            found[row[0]] = ImageRow(*row)
        return found

    def live_ids(self) -> np.ndarray:
        """Ids of every live row, ascending: what FAISS holds."""
        return self._ids_with_status(OK)

    def offline_ids(self) -> np.ndarray:
        """Ids of every offline row, ascending."""
        return self._ids_with_status(OFFLINE)

    def _ids_with_status(self, status: str) -> np.ndarray:
        with self._reading() as conn:
            rows = conn.execute("SELECT id FROM images WHERE status = ? ORDER BY id", (status,))
            return np.fromiter((i for (i,) in rows), dtype=np.int64)

    def vectors(self, ids: np.ndarray, dim: int) -> np.ndarray:
        """Embeddings [len(ids), dim] in the order of `ids`."""
        out = np.empty((len(ids), dim), dtype=np.float32)
        position = {int(i): n for n, i in enumerate(ids)}
        for image_id, blob in self._chunked(_VECTORS, list(position)):
            out[position[image_id]] = np.frombuffer(blob, dtype=np.float32)
        return out

    def tokens_by_id(self, ids: list[int]) -> dict[int, np.ndarray]:
        """Stored ITM tokens (flat fp16) of the given rows that have them."""
        rows = self._chunked(_TOKENS, [int(i) for i in ids])
        return {i: np.frombuffer(blob, dtype=np.float16) for i, blob in rows}

    def captions_by_id(self, ids: Iterable[int]) -> dict[int, str]:
        """The stored captions of those of `ids` that have one (`Catalog.captions_by_id`)."""
        with self._reading() as conn:
            query = "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'image_text'"
            if conn.execute(query).fetchone() is None:
                return {}  # a catalog from before captions
        return dict(self._chunked(_CAPTIONS, [int(i) for i in ids]))

    def _chunked(self, select_in: str, ids: list[int]) -> list[tuple]:
        """`select_in` + "(?, ?, ...)" over `ids`, CHUNK at a time, in one transaction."""
        out: list[tuple] = []
        with self._reading() as conn:
            for start in range(0, len(ids), CHUNK):
                chunk = ids[start : start + CHUNK]
                out.extend(conn.execute(f"{select_in}({', '.join('?' * len(chunk))})", chunk))
        return out
