"""An index directory: its catalog, its model's identity, and a lock for the one writer.

The lock is the directory's: it guards what lives in it (the vector file, its record, the query
towers), which only one indexer may write. Its catalog may be a database that several index
directories share (`--catalog URL`): indexers on different roots then run at once, each with its
own directory, each syncing its own vector file with every live row of the shared catalog, and
the database orders their commits (`indexer.store.catalog`). A reader of any of those
directories sees every committed row: its vector file plus the catalog's newer rows.
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from indexer.errors import IndexNotFound, ModelMismatch, PhotoseekError
from indexer.models.loading import ModelIdentity
from indexer.store import catalog_url
from indexer.store.layout import CATALOG_FILE

if TYPE_CHECKING:  # the catalog's modules load when opened: a reader never imports SQLAlchemy
    from indexer.store.catalog import Catalog
    from indexer.store.reader import CatalogReader

LOCK_FILE = "write.lock"


class IndexBusy(PhotoseekError):
    """Another process is writing to this index."""


@dataclass(frozen=True)
class ModelRecord:
    """The model an index was built with, as stored in its catalog."""

    identity: ModelIdentity
    dim: int
    image_size: int

    def to_json(self) -> str:
        return json.dumps(
            {**self.identity.to_dict(), "dim": self.dim, "image_size": self.image_size}
        )

    @classmethod
    def from_json(cls, text: str) -> ModelRecord:
        data = json.loads(text)
        identity = ModelIdentity(data["spec"], data["architecture"], data["weights"])
        return cls(identity, int(data["dim"]), int(data["image_size"]))


def open_existing(directory: Path, *, read_only: bool = True) -> Catalog:
    """The catalog of an index that must already exist; read-only unless asked."""
    from indexer.store.catalog import Catalog

    _check_exists(directory)
    return Catalog.open(directory, read_only=read_only)


def open_reader(directory: Path) -> CatalogReader:
    """The sqlite3 reader of an index that must already exist: a cold query's catalog (an index
    whose catalog is the directory's own SQLite file; for any other, `open_existing`)."""
    from indexer.store.reader import CatalogReader

    if not catalog_url.sqlite_file(directory):
        raise PhotoseekError(f"the catalog of {directory} is not its SQLite file: open it with "
                             "open_existing")  # fmt: skip
    _check_exists(directory)
    return CatalogReader.open(directory)


def _check_exists(directory: Path) -> None:
    # A catalog named by URL is checked as it opens: one without photoseek's tables is refused.
    if catalog_url.sqlite_file(directory) and not (directory / CATALOG_FILE).is_file():
        raise IndexNotFound(f"no photoseek index in {directory} (build one with `photoseek index`)")


def model_record(catalog: Catalog | CatalogReader) -> ModelRecord | None:
    text = catalog.get_meta("model")
    return ModelRecord.from_json(text) if text else None


def check_model(catalog: Catalog | CatalogReader, identity: ModelIdentity) -> None:
    """Refuse a model other than the one the index was built with."""
    record = model_record(catalog)
    if record is not None and not record.identity.same_model(identity):
        raise ModelMismatch(
            f"this index was built with {record.identity.spec}, not {identity.spec}; "
            "use that model or another --index"
        )


@contextmanager
def writer_lock(directory: Path) -> Iterator[None]:
    """Hold the index's write lock; a second writer gets IndexBusy at once."""
    directory.mkdir(parents=True, exist_ok=True)
    fd = os.open(directory / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            busy = f"another photoseek process is writing to {directory}"
            if not catalog_url.sqlite_file(directory):
                busy += " (indexers sharing one catalog each need their own --index)"
            raise IndexBusy(busy) from None
        yield
    finally:
        os.close(fd)
