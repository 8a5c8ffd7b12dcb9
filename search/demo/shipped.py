"""The demo's shipped model: a tiny dual encoder and ITM head in `data/demo-model/`.

It was trained by the demo's own recipe (`photoseek demo --retrain`, fixed seed) and rounded to
fp16; `manifest.json` beside it records each file's sha256, the recipe, the command that
rebuilds it, the CPU it was trained on and its quality on the demo gallery, so `photoseek demo`
answers in seconds instead of training for minutes, and a retrained model can be checked
against it.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from indexer.atomic import write_text
from indexer.errors import BadInput
from indexer.locations import data_dir

MANIFEST = "manifest.json"
REBUILD = ".venv/bin/python bench/demo_model.py --out data/demo-model"
# A retrained model may land this far below the shipped one (other CPU, other float rounding)
# before `photoseek demo --retrain` calls it a regression; fractions of the gallery.
QUALITY_TOLERANCE = 0.05


@dataclass(frozen=True)
class Manifest:
    """What `manifest.json` records about the shipped model."""

    files: dict[str, str]  # file name -> sha256
    quality: dict[str, float]  # the demo's figures on its gallery (fractions)
    recipe: dict[str, float]  # the DemoSize it was trained with
    rebuild: str
    trained_on: str
    # `bench/explain_bench.py` on the demo gallery: pointing_game, chance (fractions), layer
    explain: dict[str, float] = field(default_factory=dict)


def shipped_dir() -> Path:
    return data_dir() / "demo-model"


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def read_manifest(folder: Path) -> Manifest:
    """The manifest of a shipped model folder, after checking every file against it."""
    try:
        manifest = Manifest(**json.loads((folder / MANIFEST).read_text()))
    except (OSError, ValueError, TypeError) as e:
        raise BadInput(f"{folder}: no usable {MANIFEST} ({e}); rebuild with {REBUILD}") from None
    for name, digest in manifest.files.items():
        path = folder / name
        if not path.is_file() or _sha256(path) != digest:
            raise BadInput(f"{path}: missing or not the shipped file; rebuild with {REBUILD}")
    return manifest


def write_manifest(
    folder: Path,
    quality: dict[str, float],
    recipe: dict[str, float],
    trained_on: str,
    explain: dict[str, float] | None = None,
) -> Manifest:
    """Record the model files now in `folder` (every file but the manifest) and their figures."""
    files = {p.name: _sha256(p) for p in sorted(folder.iterdir()) if p.name != MANIFEST}
    manifest = Manifest(files, quality, recipe, REBUILD, trained_on, explain or {})
    write_text(folder / MANIFEST, json.dumps(asdict(manifest), indent=2) + "\n")
    return manifest


def regressions(quality: dict[str, float], shipped: dict[str, float]) -> list[str]:
    """The figures of a retrained model that fall short of the shipped model's."""
    return [
        f"{key} {quality[key]:.1%} < shipped {shipped[key]:.1%}"
        for key in sorted(shipped)
        if quality.get(key, 0.0) < shipped[key] - QUALITY_TOLERANCE
    ]
