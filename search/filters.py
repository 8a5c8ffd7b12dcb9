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

import numpy as np
from sqlalchemy import and_, func, or_, select

from indexer.errors import BadInput
from indexer.store.catalog import OK, Catalog, images, path_under


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

    def active(self) -> bool:
        return any(
            (self.under, self.glob, self.after, self.before, self.min_width, self.min_height,
             self.camera)
        )  # fmt: skip

    def allowed_ids(self, catalog: Catalog) -> np.ndarray:
        """Ids of live images passing every filter, ascending."""
        taken = func.coalesce(
            images.c.taken_at,
            func.strftime("%Y-%m-%dT%H:%M:%S", images.c.mtime_ns / 1e9, "unixepoch", "localtime"),
        )
        clauses = [images.c.status == OK]
        if self.after:
            clauses.append(taken >= parse_date(self.after))
        if self.before:
            clauses.append(taken < parse_date(self.before))
        if self.min_width:
            clauses.append(images.c.width >= self.min_width)
        if self.min_height:
            clauses.append(images.c.height >= self.min_height)
        if self.camera:
            text = f"%{self.camera.lower()}%"
            make = func.lower(func.coalesce(images.c.camera_make, ""))
            model = func.lower(func.coalesce(images.c.camera_model, ""))
            clauses.append(make.like(text) | model.like(text) | (make + " " + model).like(text))
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
