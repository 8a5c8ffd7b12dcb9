"""The manifest of an export: each file's size and SHA-256, written last, checked before use.

`towers.json` says which files an export has; the manifest says what their bytes must be, so
a cached export that a full disk, a crash or another process damaged is re-made instead of
being copied into indexes. Its names are checked like towers.json's: the manifest may come
with a foreign index folder.
"""

from __future__ import annotations

import json
from pathlib import Path

from indexer.atomic import write_text
from indexer.errors import IndexNotFound, ModelMismatch
from indexer.models.fingerprints import file_sha256

# The one rule for names that come with an index folder (towers.json follows it too).
from indexer.towers.spec import TOWERS_FILE, TowersSpec, plain_name

MANIFEST_FILE = "manifest.json"


def write_manifest(folder: Path) -> None:
    """Record every file of the finished export in `folder`, the manifest itself aside."""
    files = {
        path.name: {"size": path.stat().st_size, "sha256": file_sha256(path)}
        for path in sorted(folder.iterdir())
        if path.is_file() and path.name != MANIFEST_FILE
    }
    write_text(folder / MANIFEST_FILE, json.dumps({"files": files}, indent=2) + "\n")


def export_problem(folder: Path, *, checksums: bool) -> str | None:
    """Why the export in `folder` must not be used, or None when it is whole: towers.json
    readable in this format, every file it names in the manifest, and every file of the
    manifest present with its size (and, with `checksums`, its SHA-256)."""
    try:
        spec = TowersSpec.read(folder)
    except (IndexNotFound, ModelMismatch) as e:
        return str(e)
    try:
        files = json.loads((folder / MANIFEST_FILE).read_text(encoding="utf-8"))["files"]
        expected = {name: (int(f["size"]), str(f["sha256"])) for name, f in files.items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        return f"{folder / MANIFEST_FILE}: missing or malformed ({e})"
    named = [TOWERS_FILE, *spec.named_files().values()]
    odd = [n for n in named if n not in expected] + [n for n in expected if not plain_name(n)]
    if odd:
        return f"{folder}: {odd[0]!r} is not in the manifest as a plain file name"
    for name, (size, sha256) in expected.items():
        path = folder / name
        try:
            if path.stat().st_size != size:
                return f"{path}: {path.stat().st_size} bytes, the manifest says {size}"
            if checksums and file_sha256(path) != sha256:
                return f"{path}: its bytes differ from the manifest's checksum"
        except OSError as e:
            return f"{path}: {e.strerror or e}"
    return None
