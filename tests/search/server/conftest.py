"""Fixtures: indexes built once, and `photoseek serve` subprocesses on free loopback ports."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from serving import NAMES, Server, build_index, start_server

from helpers import REPO

DEMO_MODEL = REPO / "data" / "demo-model"  # the shipped model: it has an ITM head to explain


def indexed(factory, name: str, model: str, cache: Path, count: int) -> tuple[Path, Path]:
    """(index dir, photo dir) of `count` scenes indexed with `model`."""
    base = factory.mktemp(name)
    build_index(base / "photos", base / "index", model, cache, count)
    return base / "index", base / "photos"


def serving(index: Path, cache: Path) -> Iterator[Server]:
    running = start_server(index, cache)
    yield running
    running.stop()


@pytest.fixture(scope="session")
def served(tmp_path_factory, tiny_checkpoint, towers_cache) -> tuple[Path, Path]:
    """Six scenes, tiny model; the tests that serve it never change it."""
    return indexed(tmp_path_factory, "served", tiny_checkpoint, towers_cache, len(NAMES))


@pytest.fixture(scope="session")
def server(served, towers_cache) -> Iterator[Server]:
    yield from serving(served[0], towers_cache)


@pytest.fixture(scope="session")
def explained(tmp_path_factory, towers_cache) -> tuple[Path, Path]:
    """Three scenes indexed with the shipped demo model."""
    return indexed(tmp_path_factory, "explained", str(DEMO_MODEL), towers_cache, 3)


@pytest.fixture(scope="session")
def explaining_server(explained, towers_cache) -> Iterator[Server]:
    yield from serving(explained[0], towers_cache)
