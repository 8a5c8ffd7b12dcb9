"""`photoseek train` and `photoseek eval`: fit a dual encoder + ITM head, and measure it."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from search.cli.options import JsonOpt, QuietOpt
from search.cli.output import print_json
from search.cli.progress import progress_reporter

PairsOpt = Annotated[
    Path,
    typer.Option("--pairs", help="JSONL ({image, caption[, negatives, group]}) or CSV "
                 "(image,caption); image paths relative to the file"),
]  # fmt: skip


def register(app: typer.Typer) -> None:
    app.command("train")(train)
    app.command("eval")(evaluate)


def train(
    pairs: PairsOpt,
    out: Annotated[Path, typer.Option("--out", help="Model folder to write (resumes if present)")],
    model: Annotated[
        str | None,
        typer.Option(
            help="open_clip NAME[:PRETRAINED|:CHECKPOINT] or DIR to fine-tune "
            "[default: the tiny photoseek-shapes config, from scratch]"
        ),
    ] = None,  # fmt: skip
    epochs: Annotated[int, typer.Option(help="Passes over the pairs")] = 10,
    seed: Annotated[int, typer.Option(help="Same seed and data, same weights")] = 0,
    batch_size: Annotated[int, typer.Option(help="Pairs per step")] = 128,
    lock_image: Annotated[bool, typer.Option(help="Freeze the image tower (LiT)")] = False,
    lock_text: Annotated[
        bool, typer.Option(help="Freeze the text tower (with --lock-image: train the head alone)")
    ] = False,
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Train the dual encoder and its ITM rerank head; OUT then works as --model OUT."""
    from indexer.training.loop import train as run_training
    from indexer.training.pairs import read_pairs

    rows = read_pairs(pairs)
    groups = [r.group for r in rows if r.group is not None]  # twin groups, if every row has one
    with progress_reporter(quiet) as progress:
        result = run_training(
            [(str(r.image), r.caption, r.negatives) for r in rows],
            out,
            model=model,
            lock_image=lock_image,
            lock_text=lock_text,
            epochs=epochs,
            seed=seed,
            batch_size=batch_size,
            groups=groups if len(groups) == len(rows) else None,
            progress=progress.training if progress else None,
        )
    summary = {
        "out": str(result.out_dir),
        "epochs_run": result.epochs_run,
        "alpha": result.alpha,
        "skipped": result.skipped,
    }
    if json_out:
        print_json(summary)
    else:
        typer.echo(f"trained {result.epochs_run} epochs into {result.out_dir} "
                   f"(use it as --model {result.out_dir})", err=True)  # fmt: skip


def evaluate(
    pairs: PairsOpt,
    model: Annotated[Path, typer.Option("--model", help="A folder written by `photoseek train`")],
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Text→image and image→text R@1/5/10, ITC alone and reranked by the ITM head."""
    from indexer.training.evaluation import RERANK_KS, evaluate_pairs
    from indexer.training.pairs import read_pairs

    rows = read_pairs(pairs)
    with progress_reporter(quiet) as progress:
        report = evaluate_pairs(model, rows, progress)
    if json_out:
        print_json(report)
        return
    twin = report.get("twin_accuracy", {})
    # evaluate_pairs returns dict[str, object]: narrowed here until it returns a TypedDict
    assert isinstance(twin, dict)
    typer.echo(
        "ranking      t2i R@1  R@5   R@10   i2t R@1  R@5   R@10" + ("   twin" if twin else "")
    )
    for name in ("itc", *(f"itm_k{k}" for k in RERANK_KS)):
        ranking = report[name]
        assert isinstance(ranking, dict)
        t, i = ranking["t2i"], ranking["i2t"]
        row = f"{name:<12} {t['r1']:.3f}  {t['r5']:.3f} {t['r10']:.3f}  {i['r1']:.3f}  "
        row += f"{i['r5']:.3f} {i['r10']:.3f}"
        typer.echo(row + (f"  {twin[name]:.3f}" if twin else ""))
