"""The catalog: one row per image file, its embedding, the roots, and the model.

The catalog is the source of truth. Embeddings live here beside their rows (written in the same
transaction), so a killed run loses at most an uncommitted batch and the FAISS index can always be
brought back in line from it. Row ids are never reused (SQLite's AUTOINCREMENT, PostgreSQL's
sequence): an id names one vector forever, and a changed file gets a new row. The database is the
index directory's SQLite file or one named by URL (`indexer.store.engines`); several indexers on
different roots may write one PostgreSQL catalog at once (the generation counter is bumped in
place, keyed writes are upserts, ids come from the sequence).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sqlalchemy import (
    Connection,
    Engine,
    delete,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.exc import DBAPIError

from indexer.media.discovery import WalkOptions
from indexer.store import keywords
from indexer.store.engines import (
    CatalogTarget,
    IndexReadOnly,
    bump_generation,
    check_schema,
    locate,
    migrate,
    open_engine,
    record,
    unreachable,
    upsert,
)
from indexer.store.layout import GENERATION, CatalogNeedsUpgrade, CatalogTooNew, ImageRow
from indexer.store.schema import (
    CATALOG_FILE,
    ERROR,
    MIGRATIONS,
    OFFLINE,
    OK,
    SCHEMA_VERSION,
    WITH_VECTOR,
    embeddings,
    images,
    itm_tokens,
    meta,
    path_under,
    roots,
    text_cache,
    texts,
)

log = logging.getLogger(__name__)

# The schema's names, re-exported: the rest of the code reads them from here.
__all__ = [
    "CATALOG_FILE", "ERROR", "MIGRATIONS", "OFFLINE", "OK", "SCHEMA_VERSION", "Catalog",
    "CatalogNeedsUpgrade", "CatalogTooNew", "ImageRow", "IndexReadOnly", "NewImage", "images",
    "path_under",
]  # fmt: skip


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
    decoder: str | None = None  # with an error: the decoder version that failed


class Catalog:
    """Typed access to one index's catalog."""

    def __init__(self, engine: Engine, target: CatalogTarget, read_only: bool = False) -> None:
        self.engine = engine
        self.target = target
        self.where = target.where  # how messages name it (never with a password)
        self.read_only = read_only
        self._writer: Engine | None = None  # a read-only catalog's write engine, made on demand

    @classmethod
    def open(cls, directory: Path, *, read_only: bool = False, url: str | None = None) -> Catalog:
        """The catalog of an index directory: for writing (created and migrated as needed), or
        read-only (never written, never migrated; a catalog of another schema is refused).

        `url` (else $PHOTOSEEK_CATALOG, else the URL the directory records) names a database
        for it; without one it is the directory's SQLite file. A write open records the URL.
        """
        target = locate(directory, url)
        engine = open_engine(target, read_only)
        try:
            if read_only:
                with engine.connect() as conn:
                    check_schema(conn, target, read_only=True)
            else:
                migrate(engine, target)
                record(directory, target)
        except DBAPIError as e:
            engine.dispose()
            if target.file is not None:
                raise  # SQLite's own errors, as before: the CLI words them
            raise unreachable(target, e) from None
        except BaseException:
            engine.dispose()
            raise
        return cls(engine, target, read_only)

    def close(self) -> None:
        self.engine.dispose()
        if self._writer is not None:
            self._writer.dispose()

    @contextmanager
    def _begin(self) -> Iterator[Connection]:
        """A write transaction; refused on a read-only catalog."""
        if self.read_only:
            raise IndexReadOnly(f"{self.where} is open read-only")
        with self.engine.begin() as conn:
            yield conn

    @contextmanager
    def _cache_write(self) -> Iterator[Connection]:
        """A write transaction even on a read-only catalog: the text caches readers fill
        (describe's vocabulary vectors, a `texts add` corpus). The schema is current (checked
        at open), so the write engine needs no migration."""
        engine = self.engine
        if self.read_only:
            if self._writer is None:
                self._writer = open_engine(self.target, read_only=False)
            engine = self._writer
        try:
            with engine.begin() as conn:
                yield conn
        except DBAPIError as e:
            if not self.target.dialect.cannot_write(e):
                raise
            reason = str(e.orig).strip().splitlines()[0]
            raise IndexReadOnly(f"{self.where} cannot be written: {reason}") from None

    def schema_version(self) -> int:
        """The schema version the catalog records (its migrations)."""
        return int(self.get_meta("schema_version") or 0)

    def generation(self) -> int:
        """A counter every committed change to the images bumps (in the same transaction):
        a vector file records the generation it reflects, so readers know what is newer."""
        return int(self.get_meta(GENERATION) or 0)

    # -- meta ---------------------------------------------------------------------------------

    def get_meta(self, key: str) -> str | None:
        with self.engine.connect() as conn:
            return conn.scalar(select(meta.c.value).where(meta.c.key == key))

    def set_meta(self, key: str, value: str) -> None:
        with self._begin() as conn:
            self._set(conn, key, value)

    @staticmethod
    def _set(conn: Connection, key: str, value: str) -> None:
        upsert(conn, meta, key=key, value=value)

    # -- roots --------------------------------------------------------------------------------

    def add_roots(self, paths: Iterable[bytes], options: WalkOptions | None = None) -> None:
        """Record roots; `options` (when given) become their stored walk options."""
        stored = None if options is None else options.to_json()
        with self._begin() as conn:
            known = set(conn.scalars(select(roots.c.path)))
            for path in paths:
                if path not in known:
                    values = {"path": path, "added_at": time.time(), "options": stored}
                    conn.execute(insert(roots).values(**values))
                    known.add(path)
                elif stored is not None:
                    conn.execute(update(roots).where(roots.c.path == path).values(options=stored))

    def root_paths(self) -> list[bytes]:
        with self.engine.connect() as conn:
            return list(conn.scalars(select(roots.c.path).order_by(roots.c.id)))

    def root_options(self) -> dict[bytes, WalkOptions]:
        """Each root's stored walk options, in the order the roots were added."""
        query = select(roots.c.path, roots.c.options).order_by(roots.c.id)
        with self.engine.connect() as conn:
            return {path: WalkOptions.from_json(text_) for path, text_ in conn.execute(query)}

    def remove_roots(self, paths: Iterable[bytes]) -> None:
        with self._begin() as conn:
            conn.execute(delete(roots).where(roots.c.path.in_(list(paths))))

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
        """Content hashes of every row with an embedding (live or offline)."""
        query = select(images.c.content_hash).where(images.c.status.in_(WITH_VECTOR))
        with self.engine.connect() as conn:
            return set(conn.scalars(query))

    def row_by_hash(self, content_hash: bytes) -> ImageRow | None:
        """A row with an embedding (live or offline) for these bytes."""
        query = select(images).where(images.c.content_hash == content_hash).limit(1)
        with self.engine.connect() as conn:
            row = conn.execute(query.where(images.c.status.in_(WITH_VECTOR))).first()
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
        with self._begin() as conn:
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
                    "decoder": item.decoder,
                }
                # SQLite's rowid or PostgreSQL's sequence: unique across concurrent writers.
                query = insert(images).values(**values).returning(images.c.id)
                image_id = conn.execute(query).scalar_one()
                ids.append(image_id)
                if item.vector is not None:
                    blob = np.ascontiguousarray(item.vector, dtype=np.float32).tobytes()
                    conn.execute(insert(embeddings).values(image_id=image_id, vector=blob))
                if item.vector is not None and item.tokens is not None:
                    blob = np.ascontiguousarray(item.tokens, dtype=np.float16).tobytes()
                    conn.execute(insert(itm_tokens).values(image_id=image_id, tokens=blob))
            if new or gone:
                bump_generation(conn)
        return ids

    def delete_ids(self, ids: Iterable[int]) -> int:
        wanted = list(ids)
        with self._begin() as conn:
            for start in range(0, len(wanted), 500):
                conn.execute(delete(images).where(images.c.id.in_(wanted[start : start + 500])))
            if wanted:
                bump_generation(conn)
        return len(wanted)

    def delete_under(self, prefixes: Iterable[bytes], status: str | None = None) -> int:
        """Delete the rows at or below each prefix (only those in `status`, if given)."""
        removed = 0
        with self._begin() as conn:
            for prefix in prefixes:
                clause = path_under(prefix)
                if status is not None:
                    clause = clause & (images.c.status == status)
                removed += conn.execute(delete(images).where(clause)).rowcount
            if removed:
                bump_generation(conn)
        return removed

    def set_offline(self, ids: Iterable[int], offline: bool) -> int:
        """Mark live rows offline (their folder is out of reach), or offline rows live again."""
        wanted = list(ids)
        before, after = (OK, OFFLINE) if offline else (OFFLINE, OK)
        changed = 0
        with self._begin() as conn:
            for start in range(0, len(wanted), 500):
                chunk = wanted[start : start + 500]
                query = update(images).where(images.c.id.in_(chunk), images.c.status == before)
                changed += conn.execute(query.values(status=after)).rowcount
            if changed:
                bump_generation(conn)
        return changed

    def counts_under(self, prefix: bytes) -> dict[str, int]:
        """Rows at or below `prefix`, by status."""
        query = select(images.c.status, func.count()).where(path_under(prefix))
        with self.engine.connect() as conn:
            return {status: n for status, n in conn.execute(query.group_by(images.c.status))}

    def offline_ids(self) -> np.ndarray:
        """Ids of every offline row, ascending."""
        query = select(images.c.id).where(images.c.status == OFFLINE).order_by(images.c.id)
        with self.engine.connect() as conn:
            return np.fromiter(conn.scalars(query), dtype=np.int64)

    def captions_by_id(self, ids: Iterable[int]) -> dict[int, str]:
        """The stored captions of those of `ids` that have one (`indexer.store.keywords`)."""
        return keywords.captions_by_id(self.engine, ids)

    def caption_failures(self) -> list[tuple[bytes, str]]:
        """(path, reason) of the live images captioning failed for, by path."""
        return keywords.caption_failures(self.engine)

    # -- vectors ------------------------------------------------------------------------------

    def live_ids(self) -> np.ndarray:
        """Ids of every live row (one with an embedding, not offline), ascending: what FAISS
        holds."""
        query = select(images.c.id).where(images.c.status == OK).order_by(images.c.id)
        with self.engine.connect() as conn:
            return np.fromiter(conn.scalars(query), dtype=np.int64)

    def vectors(self, ids: np.ndarray, dim: int) -> np.ndarray:
        """Embeddings [len(ids), dim] in the order of `ids`; zeros for an id deleted meanwhile
        (another writer of a shared catalog), which is then no longer live anywhere."""
        out = np.zeros((len(ids), dim), dtype=np.float32)
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
        """Cache text vectors; on read-only media the cache is skipped (it is only a cache)."""
        try:
            self._store_text_vectors(entries)
        except IndexReadOnly as e:
            log.info("text vectors not cached: %s", e)

    def _store_text_vectors(self, entries: dict[bytes, np.ndarray]) -> None:
        with self._cache_write() as conn:
            for key, vector in entries.items():
                blob = np.ascontiguousarray(vector, np.float32).tobytes()
                upsert(conn, text_cache, key=key, vector=blob)

    def add_texts(self, entries: list[tuple[str, np.ndarray]]) -> int:
        """Add corpus texts not already present; returns how many were new."""
        with self._cache_write() as conn:
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
        return {
            "images": by_status.get(OK, 0),
            "errors": by_status.get(ERROR, 0),
            "offline": by_status.get(OFFLINE, 0),
        }

    def checkpoint(self) -> None:
        """At rest, a SQLite catalog folds its WAL into the file (the directory is then
        self-contained); a server's catalog has nothing to do."""
        with self._begin() as conn:
            self.target.dialect.checkpoint(conn)
