"""The roots of an index: list them with their counts and state, or forget one on purpose."""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path

from indexer.errors import BadInput
from indexer.media.discovery import WalkOptions, is_under
from indexer.store import vector_store
from indexer.store.catalog import ERROR, OFFLINE, OK
from indexer.store.index_dir import model_record, open_existing, writer_lock


@dataclass(frozen=True)
class RootInfo:
    """A root as `photoseek roots` shows it.

    state: "online" (there, every known file reachable), "offline" (there, but some of its
    files' folders could not be listed, e.g. an empty mount point) or "missing" (not there).
    """

    path: bytes
    state: str
    images: int
    errors: int
    offline: int
    options: WalkOptions


def list_roots(directory: Path) -> list[RootInfo]:
    """Every root of the index in `directory`, in the order they were added."""
    catalog = open_existing(directory)
    try:
        found = []
        for path, options in catalog.root_options().items():
            counts = catalog.counts_under(path)
            offline = counts.get(OFFLINE, 0)
            state = "missing" if not os.path.exists(path) else "offline" if offline else "online"
            found.append(
                RootInfo(path, state, counts.get(OK, 0), counts.get(ERROR, 0), offline, options)
            )
        return found
    finally:
        catalog.close()


def forget(directory: Path, path: str | os.PathLike[str]) -> int:
    """Remove `path` from the index on purpose: the roots at or below it and every row under it.
    A folder inside a root stays forgotten: later walks of that root skip it. Returns the
    number of rows removed."""
    target = os.fsencode(os.path.abspath(os.path.expanduser(os.fspath(path))))
    with writer_lock(directory):
        catalog = open_existing(directory, read_only=False)
        try:
            options = catalog.root_options()
            whole = [root for root in options if is_under(root, target)]
            parents = [root for root in options if root not in whole and is_under(target, root)]
            if not whole and not parents:
                raise BadInput(
                    f"{os.fsdecode(target)} is neither a root of this index nor inside one "
                    "(see `photoseek roots`)"
                )
            removed = catalog.delete_under([target])
            catalog.remove_roots(whole)
            for root in parents:
                walk = options[root]
                catalog.add_roots([root], replace(walk, skip=walk.skip | {target}))
            record = model_record(catalog)
            if record is not None:
                vector_store.refresh(directory, catalog, record.dim)
            catalog.checkpoint()
        finally:
            catalog.close()
    return removed
