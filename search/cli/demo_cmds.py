"""`photoseek demo`: the offline tour — generate, train, index, query, and an HTML page."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from search.cli.options import QuietOpt
from search.cli.output import display_path, fail
from search.cli.progress import progress_reporter

if TYPE_CHECKING:
    from search.demo.run import DemoReport


def register(app: typer.Typer) -> None:
    app.command("demo")(demo)


def demo(
    out: Annotated[
        Path | None,
        typer.Option(help="Working folder [default: $XDG_CACHE_HOME/photoseek/demo]"),
    ] = None,
    retrain: Annotated[
        bool,
        typer.Option(
            "--retrain",
            help="Train the model from scratch here (minutes) instead of using the shipped one, "
            "and check its figures against the shipped model's",
        ),
    ] = False,
    quiet: QuietOpt = False,
) -> None:
    """Offline demo on a generated gallery: text→image with and without rerank, image→image,
    image→text, and an HTML page of it all."""
    from indexer.locations import cache_dir
    from search.demo.run import run_demo
    from search.demo.shipped import regressions

    folder = out or cache_dir() / "demo"

    def say(text: str) -> None:
        typer.echo(text, err=True)

    with progress_reporter(quiet) as progress:
        training = progress.training if progress else None
        report = run_demo(folder, say, training, retrain=retrain, progress=progress)
    _print_report(report)
    if retrain and report.shipped_quality is not None:
        s = report.shipped_quality
        typer.echo(
            f"the shipped model's figures: R@1 {s['t2i_r1_itc']:.0%} → {s['t2i_r1_rerank']:.0%}, "
            f"twins {s['twin_itc']:.0%} → {s['twin_rerank']:.0%}"
        )
        short = regressions(report.quality, s)
        if short:
            raise fail("the retrained model falls short of the shipped one: " + "; ".join(short), 1)
        typer.echo("the retrained model reaches the shipped model's figures")


def _print_report(report: DemoReport) -> None:
    for caption, plain, reranked, truth in report.text_queries:
        typer.echo(
            f'\ntext → image: "{caption}"   (right answer: {os.path.basename(truth).decode()})'
        )
        typer.echo(f"  {'ITC only':<34} ITC top-32 reranked by the ITM head")
        for rank, (a, b) in enumerate(zip(plain, reranked, strict=True), 1):
            mark_a = "✓" if a.path == truth else " "
            mark_b = "✓" if b.path == truth else " "
            left = f"{mark_a} {os.path.basename(a.path).decode()} {a.score:.3f}"
            right = f"{mark_b} {os.path.basename(b.path).decode()} p={b.extra['itm_prob']:.2f}"
            typer.echo(f"  {rank}. {left:<31} {right}")
    if report.image_query:
        query, hits = report.image_query
        typer.echo(f"\nimage → image: {display_path(os.path.basename(query))}")
        for rank, hit in enumerate(hits, 1):
            typer.echo(f"  {rank}. {display_path(os.path.basename(hit.path))}  {hit.score:.3f}")
    if report.describe:
        image, texts, caption = report.describe
        typer.echo(f'\nimage → text: {display_path(os.path.basename(image))} (true: "{caption}")')
        for rank, (text, score) in enumerate(texts, 1):
            typer.echo(f"  {rank}. {text}  {score:.3f}")
    q = report.quality
    typer.echo(
        f"\nover the whole gallery (`photoseek eval`): text→image R@1 {q['t2i_r1_itc']:.0%} with "
        f"ITC, {q['t2i_r1_rerank']:.0%} reranked; right image first among its 4 twins "
        f"{q['twin_itc']:.0%} → {q['twin_rerank']:.0%}"
    )
    timings = ", ".join(f"{k} {v:.0f}s" for k, v in report.seconds.items())
    typer.echo(f"time: {timings}")
    typer.echo(f"results page: {report.page}")
