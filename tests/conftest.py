"""Shared fixtures: an isolated app environment and a tiny open_clip checkpoint built once."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

TINY = "photoseek-tiny"


@pytest.fixture(scope="session")
def towers_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One ONNX export cache for the session: each model is exported once, as for a user."""
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(autouse=True)
def isolated_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, towers_cache: Path) -> None:
    """Never touch the user's home or the network: every location points into tmp dirs."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(towers_cache))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("PHOTOSEEK_INDEX", raising=False)


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A --model value for the tiny config with seeded random weights, saved as users save them."""
    import open_clip
    import torch

    from indexer.model_loading import register_configs

    register_configs()
    torch.manual_seed(0)
    model = open_clip.create_model(TINY)
    path = tmp_path_factory.mktemp("model") / "tiny.pt"
    torch.save(model.state_dict(), path)
    return f"{TINY}:{path}"


def write_image(path: Path | bytes, seed: int, size: tuple[int, int] = (96, 72), **save) -> None:
    """A random-noise picture (distinct per seed), in the format the extension names."""
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path, **save)


@pytest.fixture
def photos(tmp_path: Path) -> Path:
    """A small photo folder with subfolders, awkward names, a copy and a bad file."""
    root = tmp_path / "photos"
    (root / "trip 2024" / "día 1").mkdir(parents=True)
    for i in range(6):
        write_image(root / f"img{i}.jpg", seed=i)
    write_image(root / "trip 2024" / "beach.png", seed=10)
    write_image(root / "trip 2024" / "día 1" / "café.webp", seed=11)
    (root / "trip 2024" / "notes.jpg").write_text("not a picture")
    (root / "copy of img0.jpg").write_bytes((root / "img0.jpg").read_bytes())
    return root


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
        cwd=Path(__file__).resolve().parents[1],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
