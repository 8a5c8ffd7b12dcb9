"""Find the image files under the roots of an index: a recursive walk with bytes paths."""

from __future__ import annotations

import fnmatch
import json
import logging
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = frozenset("jpg jpeg png webp gif tif tiff bmp heic heif avif".split())
RAW_EXTENSIONS = frozenset("arw cr2 cr3 nef dng orf rw2".split())
EXTENSIONS = IMAGE_EXTENSIONS | RAW_EXTENSIONS


@dataclass(frozen=True, slots=True)
class FoundFile:
    """An image file as the walk saw it: one stat, no read."""

    path: bytes
    size: int
    mtime_ns: int


@dataclass(frozen=True)
class WalkOptions:
    """What the walk skips: hidden entries unless asked, anything matching an exclude glob, and
    the exact folders forgotten on purpose (`photoseek forget`)."""

    include_hidden: bool = False
    exclude: tuple[str, ...] = ()
    skip: frozenset[bytes] = frozenset()

    def to_json(self) -> str:
        # fsdecode's surrogate escapes survive JSON, so any bytes path round-trips
        return json.dumps(
            {
                "include_hidden": self.include_hidden,
                "exclude": list(self.exclude),
                "skip": sorted(os.fsdecode(p) for p in self.skip),
            }
        )

    @classmethod
    def from_json(cls, text: str | None) -> WalkOptions:
        if not text:
            return cls()
        data = json.loads(text)
        return cls(
            bool(data.get("include_hidden", False)),
            tuple(data.get("exclude", ())),
            frozenset(os.fsencode(p) for p in data.get("skip", ())),
        )


def extension(path: bytes) -> str:
    """The lower-case extension of a path, without the dot ('' when there is none)."""
    name = os.path.basename(path)
    dot = name.rfind(b".")
    return name[dot + 1 :].decode("ascii", "replace").lower() if dot > 0 else ""


def is_under(path: bytes, prefix: bytes) -> bool:
    """Whether `path` is `prefix` or lies below it, by whole path components."""
    return path == prefix or path.startswith(prefix.rstrip(b"/") + b"/")


def walk(
    root: bytes, options: WalkOptions, unreachable: list[bytes] | None = None
) -> Iterator[FoundFile]:
    """Every image file under `root` (a directory or a single file), by every path to it.

    Symlinks are followed, except back into a directory the current path is already inside.
    Paths whose contents are unknown (a folder that could not be listed, an entry that could not
    be stat'ed, such as a dead symlink to a share) are appended to `unreachable`: what lay
    below them is not gone, merely out of reach.
    """
    lost = unreachable if unreachable is not None else []
    try:
        st = os.stat(root)
    except OSError as e:
        log.warning("cannot stat %s: %s", os.fsdecode(root), e.strerror)
        lost.append(root)
        return
    if not os.path.isdir(root):
        if extension(root) in EXTENSIONS:
            yield FoundFile(root, st.st_size, st.st_mtime_ns)
        return
    # A loop is a directory inside itself: check the path's ancestors, not every directory seen,
    # so a real folder is still walked when a symlink to it happened to be found first.
    stack = [(root, frozenset({(st.st_dev, st.st_ino)}))]
    while stack:
        directory, ancestors = stack.pop()
        subdirs = []
        entries = _entries(directory)
        if entries is None:
            lost.append(directory)
            continue
        for entry in entries:
            if entry.path in options.skip or _skipped(
                entry.name, os.path.relpath(entry.path, root), options
            ):
                continue
            try:
                st = entry.stat()  # follows symlinks
            except OSError as e:
                log.warning("skipping %s: %s", os.fsdecode(entry.path), e.strerror)
                lost.append(entry.path)
                continue
            if entry.is_dir():
                key = (st.st_dev, st.st_ino)
                if key not in ancestors:
                    subdirs.append((entry.path, ancestors | {key}))
            elif extension(entry.name) in EXTENSIONS:
                yield FoundFile(entry.path, st.st_size, st.st_mtime_ns)
        stack.extend(reversed(subdirs))


def walk_all(
    roots: Iterable[bytes], options: WalkOptions, unreachable: list[bytes] | None = None
) -> Iterator[FoundFile]:
    """Every image file under any of `roots`, each path once."""
    seen: set[bytes] = set()
    for root in roots:
        for found in walk(root, options, unreachable):
            if found.path not in seen:
                seen.add(found.path)
                yield found


def _entries(directory: bytes) -> list[os.DirEntry[bytes]] | None:
    """The directory's entries by name; None when it cannot be listed (not: it is empty)."""
    try:
        with os.scandir(directory) as it:
            return sorted(it, key=lambda e: e.name)
    except OSError as e:
        log.warning("cannot list %s: %s", os.fsdecode(directory), e.strerror)
        return None


def _skipped(name: bytes, relative: bytes, options: WalkOptions) -> bool:
    if name.startswith(b"._"):  # macOS AppleDouble metadata, never a picture
        return True
    if name.startswith(b".") and not options.include_hidden:
        return True
    if not options.exclude:
        return False
    text_name, text_rel = os.fsdecode(name), os.fsdecode(relative)
    return any(
        fnmatch.fnmatchcase(text_name, glob) or fnmatch.fnmatchcase(text_rel, glob)
        for glob in options.exclude
    )
