"""Helpers the test modules share: image files, the CLI as a subprocess, index invariants."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import faiss
import numpy as np
from PIL import Image

from indexer.store.catalog import Catalog
from indexer.store.vector_store import VECTORS_FILE

TINY = "photoseek-tiny"
REPO = Path(__file__).resolve().parents[1]
PHOTOSEEK = [sys.executable, "-c", "from search.cli import main; main()"]


def write_image(path: Path | bytes, seed: int, size: tuple[int, int] = (96, 72), **save) -> None:
    """A random-noise picture (distinct per seed), in the format the extension names."""
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path, **save)


def photo_folder(parent: Path, count: int, seed: int = 0, size: tuple[int, int] = (96, 72)) -> Path:
    """`parent/photos` with `count` distinct noise PNGs, p000.png, p001.png, ..."""
    root = parent / "photos"
    root.mkdir()
    for i in range(count):
        write_image(root / f"p{i:03d}.png", seed=seed + i, size=size)
    return root


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*PHOTOSEEK, *args],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, **(env or {})},
    )


def assert_one_line_error(result: subprocess.CompletedProcess[str], fragment: str) -> None:
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("photoseek: error:"), result.stderr
    assert fragment in lines[0]


def consistency(directory: Path) -> tuple[Catalog, np.ndarray]:
    """Check the invariant: FAISS holds exactly one vector per live row, under the row's id."""
    catalog = Catalog.open(directory)
    live = catalog.live_ids()
    index = faiss.read_index(str(directory / VECTORS_FILE))
    ids = faiss.vector_to_array(index.id_map)
    assert sorted(ids.tolist()) == live.tolist()
    assert len(set(ids.tolist())) == len(ids)
    stored = catalog.vectors(live, index.d)
    for image_id, vector in zip(live, stored, strict=True):
        assert np.allclose(index.reconstruct(int(image_id)), vector)
    return catalog, live


def assert_runs_without_torch(script: str) -> None:
    """Run `script` in a fresh interpreter at the repository root; it must succeed and must
    not have imported torch or open_clip by its end."""
    check = (
        "\nimport sys as _sys\n"
        "_heavy = [m for m in _sys.modules if m.split('.')[0] in ('torch', 'open_clip')]\n"
        "assert not _heavy, _heavy\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script + check],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
