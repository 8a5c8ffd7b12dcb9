"""`photoseek describe`, `texts add` and `duplicates`: image→text and image→image groupings."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from search.cli.options import IndexOpt, JsonOpt, QuietOpt
from search.cli.output import display_path, json_path, print_json
from search.cli.progress import progress_reporter

texts_app = typer.Typer(help="Manage the index's caption corpus.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.command("describe")(describe)
    app.command("duplicates")(duplicates)
    texts_app.command("add")(texts_add)
    app.add_typer(texts_app, name="texts")


def describe(
    image: Annotated[Path, typer.Argument(help="The image to describe")],
    index_dir: IndexOpt = None,
    texts: Annotated[
        Path | None, typer.Option(help="A file with one candidate text per line")
    ] = None,
    vocab: Annotated[
        str | None, typer.Option(help="A built-in vocabulary [default: photo]")
    ] = None,
    corpus: Annotated[bool, typer.Option(help="Search the corpus from `texts add`")] = False,
    k: Annotated[int, typer.Option("-k", "--top", help="Number of texts")] = 5,
    caption: Annotated[
        bool, typer.Option("--caption", help="Write a caption instead (a captioning model)")
    ] = False,
    captioner: Annotated[
        str | None,
        typer.Option(
            metavar="SPEC",
            help="The captioner for --caption: coca:ARCH:TAG, coca:ARCH:FILE, hf:ORG/NAME or "
            "a model folder; without it, the index's model if that is a CoCa",
        ),
    ] = None,
    json_out: JsonOpt = False,
) -> None:
    """The texts that best match an image (image→text), or with --caption a written caption."""
    import os

    from indexer.errors import BadInput
    from search.tools.describe import describe as run_describe
    from search.wiring import build_engine

    if not image.is_file():
        raise BadInput(f"image not found: {image}")
    if caption or captioner is not None:
        if texts is not None or vocab is not None or corpus:
            raise BadInput("--caption writes a caption: it takes no --texts, --vocab or --corpus")
        _print_caption(image, index_dir, captioner, json_out)
        return
    with build_engine(index_dir) as engine:
        hits = run_describe(engine, os.fsencode(image.resolve()), k, vocab, texts, corpus)
    if json_out:
        print_json([{"rank": r, "text": h.text, "score": round(h.score, 6)}
                    for r, h in enumerate(hits, 1)])  # fmt: skip
        return
    for rank, hit in enumerate(hits, 1):
        typer.echo(f"{rank:>3}  {hit.score:.3f}  {hit.text}")


def _print_caption(
    image: Path, index_dir: Path | None, captioner: str | None, json_out: bool
) -> None:
    from indexer.captioning import CaptionerSpec, load_captioner
    from indexer.errors import BadCaptioner, IndexNotFound
    from search.tools.caption import NAME_ONE, caption_file, index_captioner
    from search.wiring import build_engine

    chosen: str | CaptionerSpec
    if captioner is not None:
        chosen = captioner
    else:
        try:
            with build_engine(index_dir, light=True) as engine:
                chosen = index_captioner(engine)
        except IndexNotFound as e:
            raise BadCaptioner(f"no captioner: {e}; {NAME_ONE}") from None
    written = caption_file(load_captioner(chosen), image)
    if json_out:
        print_json({"caption": written.caption, "captioner": written.captioner})
    else:
        typer.echo(written.caption)


def texts_add(
    file: Annotated[Path, typer.Argument(help="One caption per line (UTF-8)")],
    index_dir: IndexOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Add captions to the index's corpus, searched by `describe --corpus`."""
    from search.tools.describe import add_corpus, read_texts
    from search.wiring import build_engine

    with build_engine(index_dir) as engine, progress_reporter(quiet) as progress:
        added = add_corpus(engine, read_texts(file), progress=progress)
    typer.echo(f"added {added} new texts", err=True)


def duplicates(
    index_dir: IndexOpt = None,
    threshold: Annotated[float, typer.Option(help="Cosine at or above which images group")] = 0.95,
    json_out: JsonOpt = False,
) -> None:
    """Groups of duplicate images: exact copies and near-duplicates."""
    from search.tools.duplicates import find_duplicates
    from search.wiring import build_engine

    with build_engine(index_dir) as engine:
        groups = find_duplicates(engine, threshold)
    if json_out:
        print_json([
            {"exact": g.exact, "min_score": round(g.min_score, 6),
             "paths": [json_path(r.path) for r in g.rows], "ids": [r.id for r in g.rows]}
            for g in groups
        ])  # fmt: skip
        return
    for number, group in enumerate(groups, 1):
        kind = (
            "exact copies" if group.exact else f"near-duplicates (cosine ≥ {group.min_score:.3f})"
        )
        typer.echo(f"group {number}: {len(group.rows)} {kind}")
        for row in group.rows:
            typer.echo(f"  {display_path(row.path)}")
