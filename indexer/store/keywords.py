"""Each image's words for keyword search: its file and folder names, its caption, the ranking.

`image_text` holds one row per image: the names as words (filled for every row by each
`photoseek index`, with or without captions) and the caption a captioner wrote, with that
captioner's fingerprint (or why it failed). The dialect keeps its keyword index over the table
(`create_keyword_index` in `indexer.store.sqlite` / `indexer.store.postgres`) and ranks it
(`keyword_ranking`); this module is the same SQL on both.
"""

from __future__ import annotations

import os
import re
import time
import unicodedata
import weakref
from collections.abc import Container, Iterable, Sequence
from dataclasses import dataclass
from itertools import islice
from types import ModuleType

from sqlalchemy import Engine, and_, inspect, or_, select, update

from indexer.errors import PhotoseekError
from indexer.store.engines import applied_migrations, upsert
from indexer.store.schema import OK, image_text, images

CHUNK = 500
MIGRATION = "0006_captions_and_keywords"
_WORD = re.compile(r"[^\W_]+")  # letters and digits of any script; `_`, `-`, `.` part words
# Engines whose catalog has `image_text`: a table, once there, stays, so a search asks once
# (the check is a schema query, a noticeable share of a served query's CPU).
_WITH_TEXT: weakref.WeakSet[Engine] = weakref.WeakSet()


class KeywordSearchUnavailable(PhotoseekError):
    """The catalog has no keyword index: written before it existed, or by a SQLite without
    FTS5."""


@dataclass(frozen=True)
class CaptionResult:
    """What captioning one image gave: a caption, or the reason there is none."""

    image_id: int
    caption: str | None = None
    error: str | None = None


def words(text: str) -> list[str]:
    """The lower-case words of `text`, accents dropped: how names are stored and queries
    split, so neither dialect's tokenizer ever sees query syntax, and both compare alike."""
    plain = unicodedata.normalize("NFKD", text)
    plain = "".join(c for c in plain if not unicodedata.combining(c))
    return _WORD.findall(plain.lower())


def names_of(path: bytes, roots: Sequence[bytes]) -> str:
    """The words of a file's name and of its folders up to its root (the root's own name
    included; the folders above it name the disk, not the photos)."""
    root = max((r for r in roots if path.startswith(r.rstrip(b"/") + b"/")), key=len, default=None)
    above = os.path.dirname(root.rstrip(b"/")) if root else os.path.dirname(os.path.dirname(path))
    return " ".join(words(os.fsdecode(path[len(above) :])))


def fill_names(engine: Engine, roots: Sequence[bytes]) -> int:
    """Give every image without one its names row; committed 500 rows at a time. Returns how
    many rows were added."""
    missing = (
        select(images.c.id, images.c.path)
        .outerjoin(image_text, image_text.c.image_id == images.c.id)
        .where(image_text.c.image_id.is_(None))
        .order_by(images.c.id)
    )
    with engine.connect() as conn:
        rows = conn.execute(missing).all()
    for start in range(0, len(rows), CHUNK):
        with engine.begin() as conn:
            for image_id, path in rows[start : start + CHUNK]:
                # an upsert: another indexer of a shared catalog may name the same row
                upsert(conn, image_text, image_id=image_id, names=names_of(path, roots))
    return len(rows)


def due_for_captions(engine: Engine, fingerprint: str) -> list[tuple[int, bytes]]:
    """(id, path) of the live images whose caption is missing or another captioner's."""
    query = (
        select(images.c.id, images.c.path)
        .join(image_text, image_text.c.image_id == images.c.id)
        .where(images.c.status == OK)
        .where(or_(image_text.c.captioner.is_(None), image_text.c.captioner != fingerprint))
        .order_by(images.c.id)
    )
    with engine.connect() as conn:
        return [(image_id, path) for image_id, path in conn.execute(query)]


def store_captions(engine: Engine, fingerprint: str, results: Iterable[CaptionResult]) -> None:
    """Record a batch of captions (or failures) in one transaction."""
    now = time.time()
    with engine.begin() as conn:
        for result in results:
            values = {"caption": result.caption, "caption_error": result.error,
                      "captioner": fingerprint, "captioned_at": now}  # fmt: skip
            conn.execute(
                update(image_text).where(image_text.c.image_id == result.image_id).values(values)
            )


def captions_by_id(engine: Engine, ids: Iterable[int]) -> dict[int, str]:
    """The stored captions of those of `ids` that have one (none on a catalog from before
    captions, opened read-only)."""
    wanted = [int(i) for i in ids]
    found: dict[int, str] = {}
    with engine.connect() as conn:
        if not wanted:
            return found
        if engine not in _WITH_TEXT:
            if not inspect(conn).has_table(image_text.name):
                return found
            _WITH_TEXT.add(engine)
        for start in range(0, len(wanted), CHUNK):
            chunk = wanted[start : start + CHUNK]
            query = select(image_text.c.image_id, image_text.c.caption).where(
                and_(image_text.c.image_id.in_(chunk), image_text.c.caption.is_not(None))
            )
            found.update({image_id: caption for image_id, caption in conn.execute(query)})
    return found


def caption_failures(engine: Engine) -> list[tuple[bytes, str]]:
    """(path, reason) of the live images the recorded captioner could not caption, by path
    (none on a catalog from before captions)."""
    with engine.connect() as conn:
        if not inspect(conn).has_table(image_text.name):
            return []
        query = (
            select(images.c.path, image_text.c.caption_error)
            .join(image_text, image_text.c.image_id == images.c.id)
            .where(and_(images.c.status == OK, image_text.c.caption_error.is_not(None)))
            .order_by(images.c.path)
        )
        return [(bytes(path), str(error)) for path, error in conn.execute(query)]


def keyword_ranking(
    engine: Engine,
    dialect: ModuleType,
    text: str,
    statuses: Sequence[str],
    limit: int,
    allowed: Container[int] | None = None,
) -> list[int]:
    """The first `limit` ids (of `allowed`, if given) of images in `statuses` whose names or
    caption hold any word of `text`, best first (FTS5's BM25 on SQLite, ts_rank on
    PostgreSQL); KeywordSearchUnavailable, one line, where the catalog has no keyword index."""
    query_words = words(text)
    with engine.connect() as conn:
        if MIGRATION not in applied_migrations(conn):
            raise KeywordSearchUnavailable(
                "this catalog predates keyword search; run `photoseek index` once to add it"
            )
        if not dialect.has_keyword_index(conn):
            raise KeywordSearchUnavailable(
                "this catalog has no keyword index: its SQLite was built without FTS5 "
                "(plain searches still work)"
            )
        ranked = dialect.keyword_ranking(conn, query_words, statuses) if query_words else ()
        return list(islice((i for i in ranked if allowed is None or i in allowed), limit))
