"""Shared fixtures: an isolated app environment and a tiny open_clip checkpoint built once."""

from __future__ import annotations

from pathlib import Path

import pytest
from pg_server import pg_server, pg_url  # noqa: F401 - fixtures: a real PostgreSQL server

from helpers import TINY, write_image


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

    from indexer.models.loading import register_configs

    register_configs()
    torch.manual_seed(0)
    model = open_clip.create_model(TINY)
    path = tmp_path_factory.mktemp("model") / "tiny.pt"
    torch.save(model.state_dict(), path)
    return f"{TINY}:{path}"


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
