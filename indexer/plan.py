"""What one indexing run must do: walk each root with its own options and compare with the catalog.

Only a file absent from a folder that was listed is gone. Rows under what could not be reached
(a folder that could not be listed, a dead symlink, a missing root, a root suddenly empty while
the catalog knows files there) are kept and go offline; an offline file found again unchanged is
live again at no cost.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from indexer.errors import BadInput
from indexer.media.decoder_version import decoder_version
from indexer.media.discovery import FoundFile, WalkOptions, is_under, walk
from indexer.progress import Progress
from indexer.store.catalog import ERROR, OFFLINE, OK, Catalog, ImageRow

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Root:
    """A root as this run walks it."""

    path: bytes
    walk: WalkOptions
    present: bool = True


@dataclass
class Plan:
    new: list[FoundFile] = field(default_factory=list)
    changed: list[tuple[FoundFile, ImageRow]] = field(default_factory=list)  # also errors retried
    gone: list[ImageRow] = field(default_factory=list)
    offline: list[ImageRow] = field(default_factory=list)  # live rows now out of reach
    back: list[ImageRow] = field(default_factory=list)  # offline rows found again unchanged
    unchanged: int = 0


def resolve_roots(
    given: tuple[str | os.PathLike[str], ...], walk: WalkOptions | None, catalog: Catalog
) -> list[Root]:
    """The roots to walk: those given (which must exist), else every root the index knows (a
    missing one is skipped with a warning). `walk`, when given, replaces their stored options
    (keeping the folders forgotten under them)."""
    stored = catalog.root_options()
    if given:
        paths = [os.fsencode(os.path.abspath(os.path.expanduser(os.fspath(p)))) for p in given]
        for path in paths:
            if not os.path.exists(path):
                raise BadInput(f"no such file or folder: {os.fsdecode(path)}")
    elif stored:
        paths = list(stored)
    else:
        raise BadInput("no folders to index: give one or more PATHs")
    roots = []
    for path in paths:
        options = stored.get(path, WalkOptions())
        if walk is not None:
            options = replace(walk, skip=options.skip)
        present = os.path.exists(path)
        if not present:
            log.warning("skipping %s: not found (its files are kept, offline)", os.fsdecode(path))
        roots.append(Root(path, options, present))
    return roots


def plan_run(
    catalog: Catalog,
    roots: list[Root],
    retry_errors: bool,
    progress: Callable[[Progress], None] | None,
) -> Plan:
    """Compare the walk of `roots` with the catalog's rows under them."""
    known = {row.path: row for row in catalog.rows_under(root.path for root in roots)}
    plan, seen, unreachable = Plan(), set(), []
    decoder = decoder_version()
    for root in roots:
        if not root.present:
            unreachable.append(root.path)
            continue
        found_here = 0
        for found in walk(root.path, root.walk, unreachable):
            found_here += 1
            if found.path in seen:
                continue
            seen.add(found.path)
            if progress:
                progress(Progress("walking", len(seen), None, "files"))
            _classify(plan, found, known.pop(found.path, None), retry_errors, decoder)
        if not found_here and any(is_under(path, root.path) for path in known):
            log.warning(
                "%s is empty but the index knows files there (not mounted?): kept, offline",
                os.fsdecode(root.path),
            )
            unreachable.append(root.path)
    for row in known.values():
        if not any(is_under(row.path, cut) for cut in unreachable):
            plan.gone.append(row)
        elif row.status == OK:
            plan.offline.append(row)
    if progress:
        progress(Progress("walking", len(seen), len(seen), "files"))
    return plan


def _classify(
    plan: Plan, found: FoundFile, row: ImageRow | None, retry_errors: bool, decoder: str
) -> None:
    if row is None:
        plan.new.append(found)
    elif row.size != found.size or row.mtime_ns != found.mtime_ns:
        plan.changed.append((found, row))
    elif row.status == ERROR and (retry_errors or row.decoder != decoder):
        plan.changed.append((found, row))  # a failure another decoder, or a retry, may read
    else:
        plan.unchanged += 1
        if row.status == OFFLINE:
            plan.back.append(row)
