"""Tiny captioners, built once per session."""

from __future__ import annotations

from pathlib import Path

import pytest
from tiny_captioners import build_blip, build_coca, build_git


@pytest.fixture(scope="session")
def coca_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_coca(tmp_path_factory.mktemp("captioners") / "coca")


@pytest.fixture(scope="session")
def blip_captioner(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("transformers")
    return build_blip(tmp_path_factory.mktemp("captioners") / "blip")


@pytest.fixture(scope="session")
def git_captioner(tmp_path_factory: pytest.TempPathFactory, blip_captioner: Path) -> Path:
    return build_git(tmp_path_factory.mktemp("captioners") / "git", blip_captioner)
