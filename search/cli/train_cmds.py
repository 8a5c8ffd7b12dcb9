"""`photoseek train` and `photoseek eval`: fit a dual encoder + ITM head, or distil a teacher
reranker into the index model's head, and measure either."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from search.cli.options import IndexOpt, JsonOpt, QuietOpt
from search.cli.output import fail, print_json
from search.cli.progress import progress_reporter

PairsOpt = Annotated[
    Path | None,
    typer.Option("--pairs", help="JSONL ({image, caption[, negatives, group]}) or CSV "
                 "(image,caption); image paths relative to the file"),
]  # fmt: skip
TeacherOpt = Annotated[
    str | None,
    typer.Option("--teacher", help="A reranker SPEC to distil (hf:ORG/NAME, a save_pretrained "
                 "folder, or a photoseek model folder with a head); needs --index"),
]  # fmt: skip
TextsOpt = Annotated[
    Path | None,
    typer.Option("--texts", help="Texts to score, one a line [default: the built-in photo "
                 "vocabulary with its templates]"),
]  # fmt: skip


def register(app: typer.Typer) -> None:
    app.command("train")(train)
    app.command("eval")(evaluate)


def train(
    out: Annotated[Path, typer.Option("--out", help="Model folder to write (resumes if present)")],
    pairs: PairsOpt = None,
    model: Annotated[
        str | None,
        typer.Option(
            help="open_clip NAME[:PRETRAINED|:CHECKPOINT] or DIR to fine-tune "
            "[default: the tiny photoseek-shapes config, from scratch]"
        ),
    ] = None,  # fmt: skip
    teacher: TeacherOpt = None,
    index_dir: IndexOpt = None,
    texts: TextsOpt = None,
    budget_pairs: Annotated[
        int | None, typer.Option(help="With --teacher: about this many (text, image) pairs")
    ] = None,
    loss: Annotated[
        str, typer.Option(help="With --teacher: bce, listwise or mix (their sum)")
    ] = "listwise",
    epochs: Annotated[int, typer.Option(help="Passes over the pairs")] = 10,
    seed: Annotated[int, typer.Option(help="Same seed and data, same weights")] = 0,
    batch_size: Annotated[int, typer.Option(help="Pairs per step")] = 128,
    lock_image: Annotated[bool, typer.Option(help="Freeze the image tower (LiT)")] = False,
    lock_text: Annotated[
        bool, typer.Option(help="Freeze the text tower (with --lock-image: train the head alone)")
    ] = False,
    ground_weight: Annotated[
        float,
        typer.Option(help="Weight of the head's box-grounding loss (needs 'boxes' in --pairs)"),
    ] = 0.0,
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Train the dual encoder and its ITM rerank head on --pairs, or (--teacher) distil a
    reranker into a head on the --index model's frozen towers; OUT then works as --model OUT."""
    if teacher is not None:
        if pairs is not None or model is not None:
            raise fail("--teacher trains on the --index model: give no --pairs or --model")
        _distil(teacher, index_dir, out, texts, budget_pairs, loss, epochs, seed, json_out, quiet)
        return
    if pairs is None:
        raise fail("train needs --pairs FILE (or --teacher SPEC --index DIR)")
    from indexer.training.loop import train as run_training
    from indexer.training.options import TrainOptions
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
            options=TrainOptions(ground_weight=ground_weight),
            progress=progress.training if progress else None,
            boxes=[r.boxes for r in rows],
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


def _distil(
    teacher: str, index_dir: Path | None, out: Path, texts: Path | None, budget: int | None,
    loss: str, epochs: int, seed: int, json_out: bool, quiet: bool,
) -> None:  # fmt: skip
    """`train --teacher`: distil, then report the student folder and the stages' times."""
    from indexer.errors import BadInput
    from indexer.locations import index_dir as resolve_index
    from indexer.training.distil import DistilOptions
    from indexer.training.distil_losses import LOSSES
    from search.distil.run import DistilSettings, distil

    if loss not in LOSSES:
        raise BadInput(f"--loss {loss!r}: choose one of {', '.join(LOSSES)}")
    if budget is not None and budget < 1:
        raise BadInput(f"--budget-pairs must be at least 1, got {budget}")
    options = DistilOptions(loss=loss, epochs=epochs, seed=seed)
    settings = DistilSettings(texts_file=texts, budget_pairs=budget, options=options)
    with progress_reporter(quiet) as progress:
        report = distil(resolve_index(index_dir), teacher, out, settings, progress)
    result = report.result
    summary = {
        "out": str(result.out_dir), "epochs_run": result.epochs_run, "alpha": result.alpha,
        "platt": list(result.platt), "texts": report.texts, "pairs": report.pairs,
        "teacher_s": round(report.teacher_s, 3), "student_s": round(report.student_s, 3),
        "skipped": result.skipped,
    }  # fmt: skip
    if json_out:
        print_json(summary)
    else:
        typer.echo(f"distilled {teacher} on {report.pairs} pairs of {report.texts} texts into "
                   f"{result.out_dir} (index with --model {result.out_dir})", err=True)  # fmt: skip


def evaluate(
    pairs: PairsOpt = None,
    model: Annotated[
        Path | None, typer.Option("--model", help="A folder written by `photoseek train`")
    ] = None,
    teacher: Annotated[
        str | None,
        typer.Option(
            "--teacher",
            help="A reranker SPEC: report the --index head's agreement "
            "with it (Spearman per text over its candidates, top-1)",
        ),
    ] = None,  # fmt: skip
    index_dir: IndexOpt = None,
    texts: TextsOpt = None,
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Text→image and image→text R@1/5/10 (--pairs, --model), ITC alone and reranked by the
    ITM head; with --teacher, the index head's agreement with that reranker."""
    if teacher is None and (pairs is None or model is None):
        raise fail("eval needs --pairs FILE --model DIR, or --teacher SPEC (with --index)")
    report: dict[str, object] = {}
    if pairs is not None and model is not None:
        report = _recalls(pairs, model, quiet)
    if teacher is not None:
        from indexer.locations import index_dir as resolve_index
        from search.distil.agreement import index_agreement

        with progress_reporter(quiet) as progress:
            report["agreement"] = index_agreement(
                resolve_index(index_dir), teacher, texts, progress=progress
            )
    if json_out:
        print_json(report)
        return
    if "itc" in report:
        _print_recalls(report)
    if "agreement" in report:
        agree = report["agreement"]
        assert isinstance(agree, dict)
        typer.echo(f"agreement with {teacher}: Spearman {agree['spearman']:.3f}, "
                   f"top-1 {agree['top1']:.3f} over {agree['texts']} texts")  # fmt: skip


def _recalls(pairs: Path, model: Path, quiet: bool) -> dict[str, object]:
    from indexer.training.evaluation import evaluate_pairs
    from indexer.training.pairs import read_pairs

    rows = read_pairs(pairs)
    with progress_reporter(quiet) as progress:
        return evaluate_pairs(model, rows, progress)


def _print_recalls(report: dict[str, object]) -> None:
    from indexer.training.evaluation import RERANK_KS

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
