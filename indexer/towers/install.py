"""Installing query towers into an index: from the per-user export cache, exporting on a miss.

Exporting a ViT-B-32 takes seconds, so exports are cached under $XDG_CACHE_HOME/photoseek/towers,
keyed by the model's identity; each index gets its own copy (hard links where possible), so an
index directory stays self-contained and portable.

Any number of processes may install the same model at once, and any may be killed part way:
one process at a time works on a cache entry (a lock per entry); an export is made in a folder
of its own, given its manifest (sizes and checksums) and only then renamed into the cache; a
cached export is checked against its manifest before it is copied; and an index's towers are
replaced by swapping two folders, so an index that had towers always has a complete set.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import sys
import uuid
from collections.abc import Callable
from pathlib import Path

from indexer.atomic import fsync_dir
from indexer.locations import TOWERS_DIR, cache_dir
from indexer.models.fingerprints import cache_key
from indexer.models.loading import LoadedModel, ModelIdentity, current_identity
from indexer.progress import Progress
from indexer.towers.child_export import export_towers_in_child
from indexer.towers.file_lock import exclusive_lock
from indexer.towers.manifest import export_problem, write_manifest
from indexer.towers.optimised import OPTIMISED_DIR, save_optimised
from indexer.towers.spec import FORMAT_VERSION

_WORK_MARKS = (".new-", ".old-", ".tmp-")  # folders being made or dropped (.tmp-: older versions)


def cache_root() -> Path:
    return cache_dir() / "towers"


def install_towers(
    directory: Path,
    identity: ModelIdentity,
    load: Callable[[], LoadedModel] | None = None,
    progress: Callable[[Progress], None] | None = None,
) -> bool:
    """Give the index its ONNX towers unless it has them whole, exporting them only when the
    cache has no intact export: from `load()`'s model, or without `load` in a child process
    that loads the model `identity.spec` names (so this process never holds the export's
    peak memory). The caller holds the index's write lock.

    Then the text tower's optimised graph for cold queries (`save_optimised`), also into
    towers installed before there was one. Returns whether towers were installed.
    """
    target = directory / TOWERS_DIR
    # Left by a killed install (the caller's lock is ours): one killed between the swap and
    # the rmtree leaves whole towers and the old ones beside them.
    _remove_work(directory, TOWERS_DIR)
    if export_problem(target, checksums=False) is None:
        save_optimised(target)
        return False
    identity = current_identity(identity)  # caches key on whole-file fingerprints
    key = cache_key(FORMAT_VERSION, identity.architecture, identity.weights)
    entry = cache_root() / key
    with exclusive_lock(cache_root() / f"{key}.lock"):
        _remove_work(cache_root(), key)  # left by a killed process: the lock is ours now
        if export_problem(entry, checksums=True) is not None:
            _export(entry, identity.spec, load, progress)
        # Once per user and model: each new index then copies it, and opens no onnxruntime
        # session of its own (~0.3 GB at its peak, ~30 MB left behind in the indexer). A copy,
        # not a link: no manifest checksum guards it, so damage to one index's copy (a bad
        # disk, a user) would otherwise reach the cache and every index made after.
        save_optimised(entry)
        staging = directory / f"{TOWERS_DIR}.new-{uuid.uuid4().hex}"
        shutil.copytree(entry, staging, copy_function=_link_or_copy,
                        ignore=shutil.ignore_patterns(OPTIMISED_DIR))  # fmt: skip
        if (entry / OPTIMISED_DIR).is_dir():
            shutil.copytree(entry / OPTIMISED_DIR, staging / OPTIMISED_DIR)
    problem = export_problem(staging, checksums=False)
    if problem is not None:  # the copy itself went wrong (a full disk)
        shutil.rmtree(staging, ignore_errors=True)
        raise OSError(f"copying the query towers into {directory} failed: {problem}")
    _put_in_place(staging, target)
    save_optimised(target)
    return True


def _export(
    entry: Path,
    spec: str,
    load: Callable[[], LoadedModel] | None,
    progress: Callable[[Progress], None] | None,
) -> None:
    """Export the model's towers beside `entry`, give them their manifest, and rename them
    to `entry` (which the caller's lock keeps anyone else from reading meanwhile)."""
    work = entry.with_name(f"{entry.name}.new-{uuid.uuid4().hex}")
    try:
        if load is None:
            export_towers_in_child(spec, work, progress)
        else:
            _export_here(load, work, progress)
        write_manifest(work)
        _put_in_place(work, entry)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _export_here(
    load: Callable[[], LoadedModel], work: Path, progress: Callable[[Progress], None] | None
) -> None:
    from indexer.towers.export import export_towers  # imports torch: only when exporting

    if progress:  # loading the full model and exporting can take tens of seconds
        progress(Progress("exporting", 0, 2, "steps", "loading the model"))
    loaded = load()
    if progress:
        progress(Progress("exporting", 1, 2, "steps", "exporting the query towers"))
    export_towers(loaded.model, work, loaded.head, loaded.head_alpha, loaded.tokenizer)
    if progress:
        progress(Progress("exporting", 2, 2, "steps"))


def _put_in_place(new: Path, target: Path) -> None:
    """Make folder `new` the folder `target`, dropping what `target` held: in one step where
    the system can swap two names, else with two renames an instant apart."""
    if target.exists() and _swap_names(new, target):
        shutil.rmtree(new)  # now the old folder
    elif target.exists():
        old = target.with_name(f"{target.name}.old-{uuid.uuid4().hex}")
        os.replace(target, old)
        os.replace(new, target)
        shutil.rmtree(old)
    else:
        os.replace(new, target)
    fsync_dir(target.parent)


def _swap_names(a: Path, b: Path) -> bool:
    """Exchange two paths' names atomically; False where the system (or file system) can't:
    Linux has renameat2(RENAME_EXCHANGE), macOS renamex_np(RENAME_SWAP)."""
    if sys.platform not in ("linux", "darwin"):
        return False
    libc = ctypes.CDLL(None, use_errno=True)  # the C library the interpreter runs on
    if hasattr(libc, "renameat2"):
        at_fdcwd, rename_exchange = -100, 2
        args = (at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange)
        return bool(libc.renameat2(*args) == 0)
    if hasattr(libc, "renamex_np"):
        rename_swap = 2
        return bool(libc.renamex_np(os.fsencode(a), os.fsencode(b), rename_swap) == 0)
    return False  # an older C library: two renames


def _remove_work(folder: Path, name: str) -> None:
    """Delete the half-made or half-dropped copies of `name` in `folder` that a killed
    process left; only call holding the lock that keeps live ones from being made there."""
    if not folder.is_dir():
        return
    for path in folder.iterdir():
        if any(path.name.startswith(name + mark) for mark in _WORK_MARKS) and path.is_dir():
            shutil.rmtree(path, ignore_errors=True)


def _link_or_copy(source: str, destination: str) -> None:
    try:
        os.link(source, destination)
    except OSError:
        shutil.copy2(source, destination)
