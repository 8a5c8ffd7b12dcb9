"""Result filters (folder, glob, dates, size, camera), resolved to the set of allowed ids.

Filters run before the cut to k, so k results come back whenever k images pass them. Dates
compare the EXIF date taken, else the file's modification time (local time); `after` is
inclusive, `before` exclusive; a bare date means its midnight.
"""

from __future__ import annotations

import fnmatch
import os
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

import numpy as np

from indexer.errors import BadInput
from indexer.store.layout import OFFLINE, OK

if TYPE_CHECKING:
    from indexer.store.catalog import Catalog
    from indexer.store.reader import CatalogReader


@dataclass(frozen=True)
class Filters:
    """What a result must satisfy; every field is optional."""

    under: tuple[str, ...] = ()
    glob: str | None = None
    after: str | None = None
    before: str | None = None
    min_width: int | None = None
    min_height: int | None = None
    camera: str | None = None
    # Also the images whose folder or drive was out of reach on the last index (kept offline).
    include_offline: bool = False

    def active(self) -> bool:
        """Whether any filter restricts the live images (include_offline adds, never restricts)."""
        return any(
            (self.under, self.glob, self.after, self.before, self.min_width, self.min_height,
             self.camera)
        )  # fmt: skip

    def allowed_ids(self, catalog: Catalog | CatalogReader) -> np.ndarray:
        """Ids of live images passing every filter, ascending."""
        return self._ids(catalog, OK)

    def offline_ids(self, catalog: Catalog | CatalogReader) -> np.ndarray:
        """Ids of offline images passing every filter (none unless include_offline), ascending."""
        if not self.include_offline:
            return np.empty(0, dtype=np.int64)
        return self._ids(catalog, OFFLINE)

    def _ids(self, catalog: Catalog | CatalogReader, status: str) -> np.ndarray:
        # Filters are SQLAlchemy clauses: only a query without them opens the sqlite3 reader.
        from sqlalchemy import and_, func, or_, select

        from indexer.store.catalog import Catalog, images, path_under

        if not isinstance(catalog, Catalog):
            raise TypeError("filters need the full catalog: open the engine without light=True")
        taken = func.coalesce(
            images.c.taken_at,
            func.strftime("%Y-%m-%dT%H:%M:%S", images.c.mtime_ns / 1e9, "unixepoch", "localtime"),
        )
        clauses = [images.c.status == status]
        if self.after:
            clauses.append(taken >= parse_date(self.after))
        if self.before:
            clauses.append(taken < parse_date(self.before))
        if self.min_width:
            clauses.append(images.c.width >= self.min_width)
        if self.min_height:
            clauses.append(images.c.height >= self.min_height)
        if self.camera:
            text = f"%{_like_literal(self.camera.lower())}%"
            make = func.lower(func.coalesce(images.c.camera_make, ""))
            model = func.lower(func.coalesce(images.c.camera_model, ""))
            clauses.append(
                make.like(text, escape="\\")
                | model.like(text, escape="\\")
                | (make + " " + model).like(text, escape="\\")
            )
        if self.under:
            clauses.append(or_(*(path_under(os.fsencode(os.path.abspath(p))) for p in self.under)))
        query = select(images.c.id, images.c.path).where(and_(*clauses)).order_by(images.c.id)
        with catalog.engine.connect() as conn:
            rows = conn.execute(query).all()
        if self.glob:
            rows = [row for row in rows if _glob_match(row.path, self.glob)]
        return np.fromiter((row.id for row in rows), dtype=np.int64, count=len(rows))


def parse_date(text: str) -> str:
    """YYYY, YYYY-MM, an ISO date or date-time, normalised like the catalog's dates."""
    text = text.strip()
    padded = {4: "-01-01", 7: "-01"}.get(len(text), "") if text[:4].isdigit() else ""
    try:
        return datetime.fromisoformat(text + padded).replace(tzinfo=None).isoformat()
    except ValueError:
        raise BadInput(f"malformed date {text!r}: use YYYY, YYYY-MM, YYYY-MM-DD or an ISO "
                       "date-time") from None  # fmt: skip


def _glob_match(path: bytes, pattern: str) -> bool:
    """Match the glob against the full path, or the file name when it has no slash."""
    text = os.fsdecode(path)
    target = text if "/" in pattern else os.path.basename(text)
    return fnmatch.fnmatchcase(target, pattern) or fnmatch.fnmatchcase(target.lower(), pattern)


def _like_literal(text: str) -> str:
    """`text` for a LIKE pattern that matches it literally: its `%`, `_` and escape escaped."""
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
