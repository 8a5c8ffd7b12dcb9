"""Distillation in the shapes world: a compositional teacher's judgement in a student head.

Run with the project's interpreter:

    .venv/bin/python bench/distil_bench.py [--teacher SPEC] [--gallery-groups N] [--texts N]
        [--budget-pairs N] [--test-groups N] [--epochs E] [--lr LR] [--losses L,L]
        [--threads T]

Teacher: a reranker SPEC; by default the shipped demo model (`data/demo-model`), which
photoseek trained itself by the demo's recipe (a dual encoder pretrained on listings, then an
ITM head on its frozen towers), used as a cross-encoder: its own towers read the files and its
fused, Platt-calibrated score is the target (`search.distil.judgement`). Pass a jointly trained
model folder (bench/shapes_recipe.py writes one) to distil that instead. Student: a fresh ITM
head on the listing-pretrained, bag-of-words dual encoder (the demo model's encoder with its
head left out), trained only on the teacher's scores: over an unlabeled gallery (train-split
renders, their captions never read; by default one draw per train twin group, 3,568 images)
and texts from the grammar (one caption per train twin group, the other three as its edits),
each with its ITC top-k, whole texts in a seeded order until --budget-pairs. Every loss is
trained from one cached set of teacher scores.

Reported on the held-out test gallery: twin accuracy and text->image R@1 of ITC alone, the
teacher and the students (each reranking its ITC top-32), both at every alpha of the grid too
(`alpha_sweep`: does the fitted alpha lose?), the torch-free rerank latency at k = 32 (warm,
median), teacher-scoring and student-training times, the CPU and the load average before and
after. Prints a markdown table and writes bench/out/distil_bench.json.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from lib import OUT_DIR, REPO
from lib.machine import cpu_model
from lib.tables import say, table, write_json

from indexer.datasets import shapes_world as sw
from indexer.models.model_files import MODEL_CONFIG, MODEL_WEIGHTS
from indexer.pipeline import IndexOptions, run_index
from indexer.progress import Progress
from indexer.training.calibration import ALPHAS
from indexer.training.distil import DistilOptions
from indexer.training.metrics import evaluate
from indexer.training.trained import load_trained
from search.distil.run import SCORES_DIR, DistilSettings, distil
from search.engine import Engine
from search.query import parse_terms

K = 32


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", type=Path, default=Path("/tmp/photoseek-distil"))
    parser.add_argument("--teacher", default=str(REPO / "data" / "demo-model"))
    parser.add_argument(
        "--encoder", type=Path, default=REPO / "data" / "demo-model",
        help="model folder whose dual encoder the student's head sits on",
    )  # fmt: skip
    parser.add_argument("--gallery-groups", type=int, default=892, help="unlabeled, x4 images")
    parser.add_argument(
        "--texts", type=int, default=0,
        help="grammar texts, one per train twin group (each + its 3 twins); 0: every group",
    )  # fmt: skip
    parser.add_argument("--budget-pairs", type=int, default=32768, help="bound on scored pairs")
    parser.add_argument("--losses", default="bce,listwise,mix", help="comma-separated losses")
    parser.add_argument("--lr", type=float, default=DistilOptions.lr)
    parser.add_argument("--test-groups", type=int, default=50)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    return parser.parse_args(argv)


def prepare(args: argparse.Namespace) -> tuple[Path, Path, Path, Path]:
    """(data, headless encoder folder, distillation index, texts file), made once per size."""
    root = args.cache / f"g{args.gallery_groups}_t{args.test_groups}_s{args.seed}"
    data = root / "data"
    if not (data / "test.jsonl").exists():
        sw.write_dataset(data, train_groups=args.gallery_groups, test_groups=args.test_groups,
                         seed=args.seed)  # fmt: skip
    encoder = root / "encoder"  # the dual encoder alone: the index stores no teacher tokens
    if not (encoder / MODEL_WEIGHTS).exists():
        encoder.mkdir(parents=True, exist_ok=True)
        for name in (MODEL_CONFIG, MODEL_WEIGHTS):
            shutil.copyfile(args.encoder / name, encoder / name)
    index = root / "index"
    if not (index / "towers").exists():
        run_index(index, IndexOptions(roots=(data / "train",), model=str(encoder)))
    texts = root / f"texts_n{args.texts}.txt"
    # one caption per train twin group: the other three come in as its edits
    pool = list({sw.group_key(s): s.caption() for s in sw.all_scenes() if not sw.held_out(s)}
                .values())  # fmt: skip
    count = args.texts or len(pool)
    picks = np.random.default_rng([args.seed, 7]).choice(len(pool), count, replace=False)
    texts.write_text("\n".join(pool[int(i)] for i in picks) + "\n")
    return data, encoder, index, texts


def run_students(args: argparse.Namespace, index: Path, texts: Path, root: Path) -> dict:
    """Distil with each loss from one set of teacher scores (kept in ROOT/teacher-scores for
    every later run of this size); times and folders per loss."""
    runs: dict[str, dict] = {}
    shared = root / SCORES_DIR
    for loss in args.losses.split(","):
        out = root / (f"student_{loss}_e{args.epochs}_n{args.texts}_b{args.budget_pairs}"
                      f"_lr{args.lr:g}")  # fmt: skip
        if shared.exists() and not (out / SCORES_DIR).exists():
            shutil.copytree(shared, out / SCORES_DIR)  # scored once, read by every run
        options = DistilOptions(loss=loss, epochs=args.epochs, seed=args.seed, lr=args.lr)
        say(f"distilling with the {loss} loss into {out}")
        settings = DistilSettings(texts_file=texts, budget_pairs=args.budget_pairs, rerank_k=K,
                                  options=options)  # fmt: skip
        report = distil(index, args.teacher, out, settings, _epoch_lines())
        runs[loss] = {"out": out, "teacher_s": report.teacher_s, "student_s": report.student_s,
                      "pairs": report.pairs, "texts": report.texts,
                      "alpha": report.result.alpha, "platt": report.result.platt}  # fmt: skip
        shutil.copytree(out / SCORES_DIR, shared, dirs_exist_ok=True)
    return runs


def _epoch_lines() -> Callable[[Progress], None]:
    """A progress line at each stage's end and at the first step of each epoch."""
    last = {"epoch": ""}
    started = time.perf_counter()

    def report(p: Progress) -> None:
        epoch = p.info.split("  ")[0]
        if (p.total is not None and p.done == p.total) or epoch != last["epoch"]:
            say(f"  {p.stage} {p.done}/{p.total} {p.unit}  {p.info}  "
                f"{time.perf_counter() - started:.0f} s")  # fmt: skip
        last["epoch"] = epoch

    return report


def quality(folder: Path, data: Path, alpha: float | None = None) -> dict[str, float]:
    """ITC and rerank@32 twin accuracy and t2i R@1 (percent) on the held-out gallery, with the
    folder's alpha or `alpha`."""
    test = sw.read_test(data / "test.jsonl")
    report = evaluate(load_trained(folder), [(data / r.image, r.caption) for r in test],
                      twin_groups=[r.group for r in test], ks=(K,), alpha=alpha)  # fmt: skip
    name = f"rerank@{K}"
    return {
        "itc_twin": report["twin_accuracy"]["itc"], "itc_r1": report["t2i"]["itc"]["R@1"],
        "twin": report["twin_accuracy"][name], "r1": report["t2i"][name]["R@1"],
    }  # fmt: skip


def alpha_sweep(folder: Path, data: Path) -> dict[str, dict[str, float]]:
    """Twin accuracy and R@1 at each alpha the fit chooses from: does the fitted one lose?"""
    out = {}
    for alpha in ALPHAS:
        q = quality(folder, data, alpha)
        out[f"{alpha:g}"] = {"twin": q["twin"], "r1": q["r1"]}
    return out


def rerank_latency(student: Path, data: Path, root: Path, queries: int = 20) -> float:
    """Median warm milliseconds of a torch-free `search --rerank` at k = 32 on the test gallery."""
    index = root / f"test_index_{student.name}"
    if not (index / "towers").exists():
        run_index(index, IndexOptions(roots=(data / "test",), model=str(student)))
    captions = [r.caption for r in sw.read_test(data / "test.jsonl")][:queries]
    times = []
    with Engine.open(index) as engine:
        engine.search(parse_terms([captions[0]]), k=10, rerank_k=K)  # warm: load the towers
        for caption in captions:
            started = time.perf_counter()
            engine.search(parse_terms([caption]), k=10, rerank_k=K)
            times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    load_before = Path("/proc/loadavg").read_text().split()[:3]
    data, _, index, texts = prepare(args)
    root = index.parent
    runs = run_students(args, index, texts, root)
    say("evaluating on the held-out gallery")
    teacher = quality(Path(args.teacher), data)
    scores = {loss: quality(run["out"], data) for loss, run in runs.items()}
    sweeps = {loss: alpha_sweep(run["out"], data) for loss, run in runs.items()}
    latency = {loss: rerank_latency(run["out"], data, root) for loss, run in runs.items()}
    first = next(iter(scores.values()))
    rows = [["ITC only (student encoder)", f"{first['itc_twin']:.1f}", f"{first['itc_r1']:.1f}",
             "", ""],
            ["teacher", f"{teacher['twin']:.1f}", f"{teacher['r1']:.1f}", "", ""]]  # fmt: skip
    for loss, s in scores.items():
        share = 100 * s["twin"] / teacher["twin"] if teacher["twin"] else float("nan")
        rows.append([f"student ({loss})", f"{s['twin']:.1f}", f"{s['r1']:.1f}",
                     f"{share:.0f} %", f"{latency[loss]:.1f}"])  # fmt: skip
    header = ["ranking (rerank@32)", "twin acc %", "t2i R@1 %", "twins vs teacher",
              "rerank k=32 ms"]  # fmt: skip
    print("\n".join(table(header, "lrrrr", rows)))
    scoring = max(runs.values(), key=lambda r: r["teacher_s"])  # the run that scored
    times = ", ".join(f"{loss} {r['student_s']:.0f} s" for loss, r in runs.items())
    load_after = Path("/proc/loadavg").read_text().split()[:3]
    print(
        f"teacher scoring {scoring['teacher_s']:.0f} s ({scoring['pairs']} pairs, "
        f"{scoring['texts']} texts; cached pairs cost nothing); student training {times}; "
        f"CPU {cpu_model()}, {args.threads} threads; load {load_before} -> {load_after}"
    )
    record = {"args": vars(args), "teacher": teacher, "students": scores, "alpha_sweep": sweeps,
              "latency_ms": latency, "runs": runs, "cpu": cpu_model(),
              "torch": torch.__version__, "loadavg": [load_before, load_after]}  # fmt: skip
    write_json(OUT_DIR / "distil_bench.json", record)
    return 0


if __name__ == "__main__":
    sys.exit(main())
