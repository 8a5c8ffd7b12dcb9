"""The library API is one import per side, and importing a package loads nothing heavy."""

from __future__ import annotations

import subprocess
import sys

import pytest

import indexer
import search
from helpers import REPO


def test_one_import_per_side() -> None:
    from indexer import IndexOptions, run_index
    from indexer.pipeline import IndexOptions as PipelineOptions
    from indexer.pipeline import run_index as pipeline_run
    from search import Engine, Filters, Hit, Term, parse_terms
    from search.engine import Engine as EngineClass
    from search.filters import Filters as FiltersClass
    from search.hits import Hit as HitClass
    from search.query import Term as TermClass
    from search.query import parse_terms as parse

    assert (IndexOptions, run_index) == (PipelineOptions, pipeline_run)
    assert (Engine, Filters, Hit, Term, parse_terms) == (
        EngineClass,
        FiltersClass,
        HitClass,
        TermClass,
        parse,
    )


@pytest.mark.parametrize("package", [indexer, search])
def test_unknown_name_is_an_attribute_error(package: object) -> None:
    with pytest.raises(AttributeError, match="no_such_name"):
        package.no_such_name  # type: ignore[attr-defined]  # noqa: B018


def test_importing_the_packages_loads_nothing_heavy() -> None:
    script = (
        "import sys, indexer, search, search.cli\n"
        "heavy = {'torch', 'open_clip', 'sqlalchemy', 'faiss', 'onnxruntime'}\n"
        "loaded = sorted(heavy & {m.split('.')[0] for m in sys.modules})\n"
        "assert not loaded, loaded\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
