"""Fixtures: an index built once, and a `photoseek serve` subprocess on a free loopback port."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from serving import NAMES, Server, build_index, start_server


@pytest.fixture(scope="session")
def served(tmp_path_factory, tiny_checkpoint, towers_cache) -> tuple[Path, Path]:
    """(index dir, photo dir) of six scenes; the tests that serve it never change it."""
    base = tmp_path_factory.mktemp("served")
    build_index(base / "photos", base / "index", tiny_checkpoint, towers_cache, len(NAMES))
    return base / "index", base / "photos"


@pytest.fixture(scope="session")
def server(served, towers_cache) -> Iterator[Server]:
    running = start_server(served[0], towers_cache)
    yield running
    running.stop()
