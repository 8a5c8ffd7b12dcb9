"""`photoseek search`: text and image queries with arithmetic, filters and every output form."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from search.cli.options import IndexOpt, JsonOpt
from search.cli.output import display_path, fail, print_json, write_paths

if TYPE_CHECKING:
    from search.hits import Hit
    from search.query import Term

TextMatchOpt = Annotated[
    bool, typer.Option(help="Fuse with a keyword search of captions and file/folder names (RRF)")
]


def register(app: typer.Typer) -> None:
    app.command("search")(search)


def search(
    query: Annotated[
        list[str] | None,
        typer.Argument(help="Text and/or image paths; `a + b - c`, weights as `2:term`"),
    ] = None,
    index_dir: IndexOpt = None,
    k: Annotated[int, typer.Option("-k", "--top", help="Number of results")] = 10,
    image: Annotated[list[str] | None, typer.Option(help="A query image (repeatable)")] = None,
    under: Annotated[list[str] | None, typer.Option(help="Only under this folder")] = None,
    glob: Annotated[str | None, typer.Option(help="Only paths or names matching")] = None,
    after: Annotated[str | None, typer.Option(help="Taken on/after YYYY-MM-DD")] = None,
    before: Annotated[str | None, typer.Option(help="Taken before YYYY-MM-DD")] = None,
    min_width: Annotated[int | None, typer.Option(help="Minimum width in px")] = None,
    min_height: Annotated[int | None, typer.Option(help="Minimum height in px")] = None,
    camera: Annotated[str | None, typer.Option(help="Camera make/model contains")] = None,
    include_offline: Annotated[
        bool, typer.Option(help="Also images whose folder or drive is offline (see `roots`)")
    ] = False,
    threshold: Annotated[
        float | None,
        typer.Option(
            help="Drop results scoring below (with --rerank: below this match probability)"
        ),
    ] = None,
    rerank: Annotated[
        bool, typer.Option(help="Rescore the top candidates with an ITM reranker")
    ] = False,
    reranker: Annotated[
        str | None,
        typer.Option(help="With --rerank: head, hf:ORG/NAME or a folder (`photoseek rerankers`)"),
    ] = None,
    rerank_k: Annotated[int, typer.Option(help="Candidates the reranker rescores")] = 32,
    text_match: TextMatchOpt = False,
    json_out: JsonOpt = False,
    paths: Annotated[bool, typer.Option("--paths", help="Print only paths, one per line")] = False,
    nul: Annotated[bool, typer.Option("-0", help="With --paths: NUL-separated")] = False,
    html: Annotated[Path | None, typer.Option(help="Write a page of results to FILE")] = None,
    explain: Annotated[bool, typer.Option(help="With --html: map where the text matches")] = False,
    model: Annotated[
        str | None, typer.Option(help="Fail unless the index was built with this model")
    ] = None,
) -> None:
    """Find the images that best match text and/or images."""
    from search.filters import Filters
    from search.query import parse_terms
    from search.wiring import Preload, build_engine

    if nul and not paths:
        raise fail("-0 goes with --paths")
    if explain and html is None:
        raise fail("--explain goes with --html")
    terms = parse_terms(query or [], image or [])
    if reranker is not None and not rerank:
        raise fail("--reranker goes with --rerank")
    head = rerank and reranker in (None, "head")
    preload = Preload.for_terms(terms, head)
    spec = reranker if rerank else None
    filters = Filters(
        under=tuple(under or ()), glob=glob, after=after, before=before,
        min_width=min_width, min_height=min_height, camera=camera,
        include_offline=include_offline,
    )  # fmt: skip
    # Without filters the catalog is read through sqlite3: SQLAlchemy's import alone costs a
    # cold query more than its whole search.
    light = not (filters.active() or include_offline or text_match or spec not in (None, "head"))
    with build_engine(
        index_dir, preload=preload, model=model, reranker=spec, light=light, once=True
    ) as engine:
        hits = engine.search(
            terms, k=k, filters=filters, threshold=threshold,
            rerank_k=rerank_k if rerank else None, text_match=text_match,
        )  # fmt: skip
    if html is not None:
        _write_page(html, query or image or [], hits, terms if explain else None, index_dir, spec)
    if json_out:
        print_json([hit.to_json(rank) for rank, hit in enumerate(hits, 1)])
    elif paths:
        write_paths([hit.path for hit in hits], nul)
    elif html is None or sys.stdout.isatty():
        _print_table(hits)


def _write_page(
    path: Path,
    words: list[str],
    hits: list[Hit],
    explained: list[Term] | None,
    index_dir: Path | None,
    reranker: str | None,
) -> None:
    """The --html page; with `explained` (--explain), each photo with its map over it."""
    from search.tools.render import write_html

    picture = None
    if explained is not None:
        from search.tools.explain_overlays import overlay_pictures

        picture = overlay_pictures(explained, index_dir, reranker)
    write_html(path, "photoseek: " + " ".join(words), [("results", hits)], picture)


def _print_table(hits: list[Hit]) -> None:
    if not sys.stdout.isatty():
        for rank, hit in enumerate(hits, 1):
            sys.stdout.write(f"{rank}\t{hit.score:.4f}\t{display_path(hit.path)}\n")
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(box=None, header_style="bold")
    table.add_column("#", justify="right")
    table.add_column("score", justify="right")
    # every hit's keys: a fused hit has the ranks of only the rankings that hold it
    extra_keys = list(dict.fromkeys(key for hit in hits for key in hit.extra))
    for key in extra_keys:
        table.add_column(key, justify="right")
    table.add_column("path")
    for rank, hit in enumerate(hits, 1):
        extras = [_cell(hit.extra.get(key)) for key in extra_keys]
        table.add_row(str(rank), f"{hit.score:.3f}", *extras, display_path(hit.path))
    Console().print(table if hits else "no results")


def _cell(value: float | None) -> str:
    """An extra field in the table: ranks as integers, scores to three places."""
    if value is None:
        return ""
    return str(value) if isinstance(value, int) else f"{value:.3f}"
