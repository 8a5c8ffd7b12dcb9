"""The SQLite catalog: one row per image file, its embedding, the roots, and the model.

The catalog is the source of truth. Embeddings live here beside their rows (written in the same
transaction), so a killed run loses at most an uncommitted batch and the FAISS index can always be
brought back in line from it. Row ids are never reused (AUTOINCREMENT): an id names one vector
forever, and a changed file gets a new row.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sqlalchemy import (
    BigInteger,
    Column,
    ColumnElement,
    Connection,
    Engine,
    Float,
    ForeignKey,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    create_engine,
    delete,
    event,
    func,
    insert,
    select,
    text,
)

CATALOG_FILE = "catalog.sqlite"

metadata = MetaData()

meta = Table("meta", metadata, Column("key", String, primary_key=True), Column("value", Text))
migrations = Table(
    "migrations",
    metadata,
    Column("name", String, primary_key=True),
    Column("applied_at", Float, nullable=False),
)
roots = Table(
    "roots",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("path", LargeBinary, unique=True, nullable=False),
    Column("added_at", Float, nullable=False),
)
images = Table(
    "images",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("path", LargeBinary, unique=True, nullable=False),  # raw bytes: any file name works
    Column("size", BigInteger, nullable=False),
    Column("mtime_ns", BigInteger, nullable=False),
    Column("content_hash", LargeBinary, index=True),
    Column("width", Integer),
    Column("height", Integer),
    Column("taken_at", String),
    Column("camera_make", String),
    Column("camera_model", String),
    Column("status", String, nullable=False),  # "ok" | "error"
    Column("error", Text),
    Column("indexed_at", Float, nullable=False),
    sqlite_autoincrement=True,
)
embeddings = Table(
    "embeddings",
    metadata,
    Column("image_id", Integer, ForeignKey("images.id", ondelete="CASCADE"), primary_key=True),
    Column("vector", LargeBinary, nullable=False),  # float32, L2-normalised
)

# The ITM head's compact per-image tokens (fp16), for reranking; only with a head-bearing model.
itm_tokens = Table(
    "itm_tokens",
    metadata,
    Column("image_id", Integer, ForeignKey("images.id", ondelete="CASCADE"), primary_key=True),
    Column("tokens", LargeBinary, nullable=False),
)
# Text embeddings cached per model (describe's vocabularies and --texts files).
text_cache = Table(
    "text_cache",
    metadata,
    Column("key", LargeBinary, primary_key=True),  # blake2b(model weights id, text)
    Column("vector", LargeBinary, nullable=False),
)
# A caption corpus (`photoseek texts add`), searched through its own FAISS index.
texts = Table(
    "texts",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("text", Text, unique=True, nullable=False),
    Column("vector", LargeBinary, nullable=False),
    sqlite_autoincrement=True,
)

OK, ERROR = "ok", "error"


@dataclass(frozen=True, slots=True)
class ImageRow:
    """A catalog row as the indexer and queries see it."""

    id: int
    path: bytes
    size: int
    mtime_ns: int
    content_hash: bytes | None
    width: int | None
    height: int | None
    taken_at: str | None
    camera_make: str | None
    camera_model: str | None
    status: str
    error: str | None
    indexed_at: float


@dataclass(frozen=True)
class NewImage:
    """What a pipeline batch writes for one file: metadata and a vector, or an error reason."""

    path: bytes
    size: int
    mtime_ns: int
    content_hash: bytes | None
    vector: np.ndarray | None = None
    width: int | None = None
    height: int | None = None
    taken_at: str | None = None
    camera_make: str | None = None
    camera_model: str | None = None
    error: str | None = None
    tokens: np.ndarray | None = None  # the ITM head's stored form, fp16


def path_under(prefix: bytes) -> ColumnElement[bool]:
    """The clause for "the image's path is `prefix` (a file) or lies below it (a folder)".

    A range on the bytes, not LIKE: the unique index on path serves it, and no byte of a name
    acts as a wildcard. Everything below `folder/` sorts before `folder0`, "0" being "/" + 1.
    """
    folder = prefix.rstrip(b"/")
    below = (images.c.path >= folder + b"/") & (images.c.path < folder + b"0")
    return (images.c.path == prefix) | below


def _create_v1(conn: Connection) -> None:
    metadata.create_all(conn, tables=[meta, roots, images, embeddings])


def _text_tables(conn: Connection) -> None:
    metadata.create_all(conn, tables=[text_cache, texts])


def _itm_tokens(conn: Connection) -> None:
    metadata.create_all(conn, tables=[itm_tokens])


# Ordered and named; each runs once and is recorded in `migrations`. Append, never edit.
MIGRATIONS: list[tuple[str, Callable[[Connection], None]]] = [
    ("0001_initial", _create_v1),
    ("0002_text_tables", _text_tables),
    ("0003_itm_tokens", _itm_tokens),
]
SCHEMA_VERSION = len(MIGRATIONS)


def _sqlite_pragmas(dbapi_conn, _record) -> None:  # noqa: ANN001 - SQLAlchemy event signature
    cursor = dbapi_conn.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: a killed process loses nothing
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.close()


class Catalog:
    """Typed access to one index's SQLite catalog."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    @classmethod
    def open(cls, directory: Path) -> Catalog:
        """Open (creating and migrating as needed) the catalog in an index directory."""
        engine = create_engine(f"sqlite:///{directory / CATALOG_FILE}")
        event.listen(engine, "connect", _sqlite_pragmas)
        catalog = cls(engine)
        catalog.migrate()
        return catalog

    def close(self) -> None:
        self.engine.dispose()

    def migrate(self) -> None:
        with self.engine.begin() as conn:
            migrations.create(conn, checkfirst=True)
            done = set(conn.scalars(select(migrations.c.name)))
            for name, step in MIGRATIONS:
                if name not in done:
                    step(conn)
                    conn.execute(insert(migrations).values(name=name, applied_at=time.time()))
            self._set(conn, "schema_version", str(SCHEMA_VERSION))

    # -- meta ---------------------------------------------------------------------------------

    def get_meta(self, key: str) -> str | None:
        with self.engine.connect() as conn:
            return conn.scalar(select(meta.c.value).where(meta.c.key == key))

    def set_meta(self, key: str, value: str) -> None:
        with self.engine.begin() as conn:
            self._set(conn, key, value)

    @staticmethod
    def _set(conn: Connection, key: str, value: str) -> None:
        conn.execute(delete(meta).where(meta.c.key == key))
        conn.execute(insert(meta).values(key=key, value=value))

    # -- roots --------------------------------------------------------------------------------

    def add_roots(self, paths: Iterable[bytes]) -> None:
        with self.engine.begin() as conn:
            known = set(conn.scalars(select(roots.c.path)))
            for path in paths:
                if path not in known:
                    conn.execute(insert(roots).values(path=path, added_at=time.time()))
                    known.add(path)

    def root_paths(self) -> list[bytes]:
        with self.engine.connect() as conn:
            return list(conn.scalars(select(roots.c.path).order_by(roots.c.id)))

    # -- images -------------------------------------------------------------------------------

    def rows_under(self, prefixes: Iterable[bytes]) -> Iterator[ImageRow]:
        """Rows whose path is a prefix (a root directory or file) or lies below one."""
        with self.engine.connect() as conn:
            for prefix in prefixes:
                for row in conn.execute(select(images).where(path_under(prefix))):
                    yield ImageRow(*row)

    def all_rows(self, status: str | None = None) -> list[ImageRow]:
        query = select(images).order_by(images.c.id)
        if status is not None:
            query = query.where(images.c.status == status)
        with self.engine.connect() as conn:
            return [ImageRow(*row) for row in conn.execute(query)]

    def rows_by_id(self, ids: Iterable[int]) -> dict[int, ImageRow]:
        wanted = list(ids)
        found: dict[int, ImageRow] = {}
        with self.engine.connect() as conn:
            for start in range(0, len(wanted), 500):
                chunk = wanted[start : start + 500]
                for row in conn.execute(select(images).where(images.c.id.in_(chunk))):
                    found[row.id] = ImageRow(*row)
        return found

    def live_hashes(self) -> set[bytes]:
        """Content hashes of every row with an embedding."""
        query = select(images.c.content_hash).where(images.c.status == OK)
        with self.engine.connect() as conn:
            return set(conn.scalars(query))

    def row_by_hash(self, content_hash: bytes) -> ImageRow | None:
        query = select(images).where(images.c.content_hash == content_hash).limit(1)
        with self.engine.connect() as conn:
            row = conn.execute(query.where(images.c.status == OK)).first()
        return ImageRow(*row) if row else None

    def vectors_by_hash(
        self, hashes: Iterable[bytes]
    ) -> dict[bytes, tuple[np.ndarray, np.ndarray | None]]:
        """An embedding (and stored ITM tokens, if any) for each hash some live row has."""
        wanted = list(hashes)
        found: dict[bytes, tuple[np.ndarray, np.ndarray | None]] = {}
        with self.engine.connect() as conn:
            for start in range(0, len(wanted), 500):
                query = (
                    select(images.c.content_hash, embeddings.c.vector, itm_tokens.c.tokens)
                    .join(embeddings, embeddings.c.image_id == images.c.id)
                    .outerjoin(itm_tokens, itm_tokens.c.image_id == images.c.id)
                    .where(images.c.content_hash.in_(wanted[start : start + 500]))
                )
                for content_hash, blob, tokens in conn.execute(query):
                    found[content_hash] = (
                        np.frombuffer(blob, dtype=np.float32),
                        None if tokens is None else np.frombuffer(tokens, dtype=np.float16),
                    )
        return found

    def tokens_by_id(self, ids: list[int]) -> dict[int, np.ndarray]:
        """Stored ITM tokens (flat fp16) of the given rows that have them."""
        with self.engine.connect() as conn:
            rows = conn.execute(select(itm_tokens).where(itm_tokens.c.image_id.in_(ids)))
            return {i: np.frombuffer(blob, dtype=np.float16) for i, blob in rows}

    def token_bytes(self) -> tuple[int, int]:
        """(rows with stored ITM tokens, their total bytes)."""
        query = select(func.count(), func.coalesce(func.sum(func.length(itm_tokens.c.tokens)), 0))
        with self.engine.connect() as conn:
            count, total = conn.execute(query).one()
        return int(count), int(total)

    def write_batch(self, new: list[NewImage], replaced_ids: Iterable[int] = ()) -> list[int]:
        """Insert a batch of files (and drop the rows they replace) in one transaction."""
        now = time.time()
        ids: list[int] = []
        with self.engine.begin() as conn:
            gone = list(replaced_ids)
            if gone:
                conn.execute(delete(images).where(images.c.id.in_(gone)))
            for item in new:
                values = {
                    "path": item.path,
                    "size": item.size,
                    "mtime_ns": item.mtime_ns,
                    "content_hash": item.content_hash,
                    "width": item.width,
                    "height": item.height,
                    "taken_at": item.taken_at,
                    "camera_make": item.camera_make,
                    "camera_model": item.camera_model,
                    "status": OK if item.vector is not None else ERROR,
                    "error": item.error,
                    "indexed_at": now,
                }
                # An INTEGER PRIMARY KEY is SQLite's rowid: lastrowid is the new row's id.
                image_id = conn.execute(insert(images).values(**values)).lastrowid
                ids.append(image_id)
                if item.vector is not None:
                    blob = np.ascontiguousarray(item.vector, dtype=np.float32).tobytes()
                    conn.execute(insert(embeddings).values(image_id=image_id, vector=blob))
                if item.vector is not None and item.tokens is not None:
                    blob = np.ascontiguousarray(item.tokens, dtype=np.float16).tobytes()
                    conn.execute(insert(itm_tokens).values(image_id=image_id, tokens=blob))
        return ids

    def delete_ids(self, ids: Iterable[int]) -> int:
        wanted = list(ids)
        with self.engine.begin() as conn:
            for start in range(0, len(wanted), 500):
                conn.execute(delete(images).where(images.c.id.in_(wanted[start : start + 500])))
        return len(wanted)

    # -- vectors ------------------------------------------------------------------------------

    def live_ids(self) -> np.ndarray:
        """Ids of every row with an embedding, ascending."""
        with self.engine.connect() as conn:
            ids = conn.scalars(select(embeddings.c.image_id).order_by(embeddings.c.image_id))
            return np.fromiter(ids, dtype=np.int64)

    def vectors(self, ids: np.ndarray, dim: int) -> np.ndarray:
        """Embeddings [len(ids), dim] in the order of `ids`."""
        out = np.empty((len(ids), dim), dtype=np.float32)
        position = {int(i): n for n, i in enumerate(ids)}
        with self.engine.connect() as conn:
            for start in range(0, len(ids), 500):
                chunk = [int(i) for i in ids[start : start + 500]]
                query = select(embeddings).where(embeddings.c.image_id.in_(chunk))
                for image_id, blob in conn.execute(query):
                    out[position[image_id]] = np.frombuffer(blob, dtype=np.float32)
        return out

    # -- texts --------------------------------------------------------------------------------

    def cached_text_vectors(self, keys: list[bytes]) -> dict[bytes, np.ndarray]:
        found: dict[bytes, np.ndarray] = {}
        with self.engine.connect() as conn:
            for start in range(0, len(keys), 500):
                query = select(text_cache).where(text_cache.c.key.in_(keys[start : start + 500]))
                for key, blob in conn.execute(query):
                    found[key] = np.frombuffer(blob, dtype=np.float32)
        return found

    def cache_text_vectors(self, entries: dict[bytes, np.ndarray]) -> None:
        with self.engine.begin() as conn:
            for key, vector in entries.items():
                conn.execute(delete(text_cache).where(text_cache.c.key == key))
                blob = np.ascontiguousarray(vector, np.float32).tobytes()
                conn.execute(insert(text_cache).values(key=key, vector=blob))

    def add_texts(self, entries: list[tuple[str, np.ndarray]]) -> int:
        """Add corpus texts not already present; returns how many were new."""
        with self.engine.begin() as conn:
            known = set(conn.scalars(select(texts.c.text)))
            new = [(t, v) for t, v in entries if t not in known]
            for text_, vector in new:
                blob = np.ascontiguousarray(vector, np.float32).tobytes()
                conn.execute(insert(texts).values(text=text_, vector=blob))
        return len(new)

    def text_corpus(self) -> tuple[np.ndarray, list[str], np.ndarray]:
        """Every corpus entry: ids, texts and vectors [n, d] ([0, 0] for an empty corpus)."""
        with self.engine.connect() as conn:
            rows = conn.execute(select(texts).order_by(texts.c.id)).all()
        ids = np.array([r.id for r in rows], dtype=np.int64)
        vectors = (
            np.stack([np.frombuffer(r.vector, np.float32) for r in rows])
            if rows
            else np.empty((0, 0), dtype=np.float32)
        )
        return ids, [r.text for r in rows], vectors

    def texts_by_id(self, ids: list[int]) -> dict[int, str]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(texts.c.id, texts.c.text).where(texts.c.id.in_(ids)))
            return dict(rows.all())

    # -- counts -------------------------------------------------------------------------------

    def counts(self) -> dict[str, int]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(images.c.status, func.count()).group_by(images.c.status))
            by_status: dict[str, int] = {status: count for status, count in rows}
        return {"images": by_status.get(OK, 0), "errors": by_status.get(ERROR, 0)}

    def checkpoint(self) -> None:
        """Fold the WAL into the database file, so the directory is self-contained at rest."""
        with self.engine.connect() as conn:
            conn.execute(text("PRAGMA wal_checkpoint(TRUNCATE)"))
