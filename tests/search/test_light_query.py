"""A cold query without filters reads the catalog through sqlite3 and scans a Flat vector file
with numpy: same hits, no SQLAlchemy, no faiss."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from helpers import REPO
from indexer.pipeline import IndexOptions, run_index
from search.filters import Filters
from search.query import parse_terms
from search.wiring import build_engine


@pytest.fixture
def index(tmp_path: Path, photos: Path, tiny_checkpoint: str) -> Path:
    directory = tmp_path / "idx"
    run_index(directory, IndexOptions(roots=(photos,), model=tiny_checkpoint))
    return directory


def test_the_light_engine_finds_what_the_full_one_finds(index):
    terms = parse_terms(["a red square"])
    with build_engine(index) as full, build_engine(index, light=True) as light:
        for k in (1, 3, 50):
            assert light.search(terms, k=k) == full.search(terms, k=k)
            assert light.search(terms, k=k, threshold=0.0) == full.search(terms, k=k, threshold=0.0)
        with pytest.raises(TypeError, match="full catalog"):
            light.search(terms, filters=Filters(glob="*.png"))


def test_a_cold_cli_query_imports_neither_sqlalchemy_nor_torch_nor_pil_nor_faiss(index):
    script = (
        "import os, sys\n"
        "exit_now = os._exit\n"
        "def report(code):\n"
        "    loaded = {m.split('.')[0] for m in sys.modules}\n"
        "    heavy = {'sqlalchemy', 'torch', 'open_clip', 'PIL', 'faiss'} & loaded\n"
        "    sys.stderr.write(f'heavy={sorted(heavy)}\\n')\n"
        "    exit_now(code)\n"
        "os._exit = report\n"
        f"sys.argv = ['photoseek', 'search', 'a red square', '--index', {str(index)!r}, '--json']\n"
        "from search.cli import main\n"
        "main()\n"
    )
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True,
                          timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "heavy=[]" in done.stderr, done.stderr
    assert '"rank": 1' in done.stdout
