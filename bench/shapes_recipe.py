"""The shapes-world ITM recipe, end to end: generate, train, evaluate ITC vs rerank.

Run with the project's interpreter:

    .venv/bin/python bench/shapes_recipe.py [--train-groups N] [--epochs E] [--threads T]
        [--pretrain-listings EPOCHS]

Stages (each timed):
  1. generate: `write_dataset` writes the test gallery (250 held-out twin groups, 1,000 images)
     and N training twin groups: for each of N train scenes one layout, all four twins rendered
     with it, each twin a pair whose negatives are its three twin captions and up to three
     one-slot edits. Pairs of one layout share a group id, so `train` batches them together.
  2. train: `indexer.training.train` from scratch (tiny `photoseek-shapes` ViT, patch 8),
     towers and head jointly. With --pretrain-listings, the situation of a user with a
     pretrained CLIP instead: a plain dual encoder (ITC alone, random batches) is first trained
     on the same images captioned by listings (``a red circle and a blue square``: no
     relations, as in web alt text), then the head alone on its frozen towers.
  3. evaluate: text->image and image->text R@1/5/10 and twin accuracy, ITC alone and the
     ITC top-k reranked by the fused ITM score for k = 8, 16, 32.

Prints a markdown table and writes bench/out/shapes_recipe.json.
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import sys
import time
from pathlib import Path

import torch
from lib import OUT_DIR
from lib.tables import table, write_json

from indexer.datasets import shapes_world as sw
from indexer.training.loop import TrainProgress, train
from indexer.training.metrics import evaluate
from indexer.training.options import TrainOptions
from indexer.training.trained import load_trained


def markdown(report: dict) -> str:
    header = ["ranking", "t2i R@1", "t2i R@5", "t2i R@10", "i2t R@1", "i2t R@5", "i2t R@10"]
    rows = []
    for name in report["t2i"]:
        t, i = report["t2i"][name], report["i2t"][name]
        twin = report["twin_accuracy"].get(name, float("nan"))
        rows.append(
            [name, *(f"{s[k]:.1f}" for s in (t, i) for k in ("R@1", "R@5", "R@10")), f"{twin:.1f}"]
        )
    return "\n".join(table([*header, "twin acc"], "llllllll", rows))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", type=Path, default=Path("/tmp/photoseek-shapes"))
    parser.add_argument("--train-groups", type=int, default=5000)
    parser.add_argument("--test-groups", type=int, default=250)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--itm-weight", type=float, default=1.0)
    parser.add_argument("--twin-listwise", type=float, default=TrainOptions.twin_listwise)
    parser.add_argument("--itm-tower-grad", type=float, default=TrainOptions.itm_tower_grad)
    parser.add_argument(
        "--no-itc-group-negatives",
        dest="itc_group_negatives",
        action="store_false",
        help="keep a pair's twins out of the contrastive loss (the head alone separates them)",
    )
    parser.add_argument(
        "--no-group-batches",
        dest="group_batches",
        action="store_false",
        help="batch pairs at random, as CLIP trains (twins meet the head as caption edits)",
    )
    parser.add_argument(
        "--pretrain-listings",
        type=int,
        default=0,
        metavar="EPOCHS",
        help="first pretrain a plain dual encoder on listings (no relations, like web alt "
        "text), then train the head alone on its frozen towers",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--head", default="{}", help="ItmConfig overrides, as JSON")
    parser.add_argument("--tag", default="")
    return parser.parse_args(argv)


def run_name(args: argparse.Namespace) -> str:
    """The run's folder name under the cache's runs/: every setting that changes the model."""
    run = f"g{args.train_groups}_e{args.epochs}_b{args.batch_size}_s{args.seed}{args.tag}"
    if args.pretrain_listings:
        run += f"_frozen_on_listings{args.pretrain_listings}"
    return run


def generate(args: argparse.Namespace) -> Path:
    """Stage 1: the dataset folder, written once per size and seed."""
    data = args.cache / f"data_g{args.train_groups}_t{args.test_groups}_s{args.seed}"
    if not (data / "test.jsonl").exists():
        sw.write_dataset(
            data, train_groups=args.train_groups, test_groups=args.test_groups, seed=args.seed
        )
    return data


def report(p: TrainProgress) -> None:
    if p.step % 50 == 0 or p.step == p.steps:
        print(
            f"epoch {p.epoch} step {p.step}/{p.steps} itc {p.itc_loss:.3f} "
            f"itm {p.itm_loss:.3f} {p.images_per_s:.0f} img/s",
            flush=True,
        )


def pretrain_on_listings(args: argparse.Namespace, data: Path, rows: list) -> str:
    """A plain dual encoder (ITC alone, random batches) on listing captions; its model name."""
    listings = sw.listings([r.caption for r in rows], args.seed)
    pretrain_run = f"listings_g{args.train_groups}_e{args.pretrain_listings}_s{args.seed}"
    pretrained = train(
        [(str(data / r.image), text) for r, text in zip(rows, listings, strict=True)],
        args.cache / "runs" / pretrain_run,
        epochs=args.pretrain_listings,
        seed=args.seed,
        batch_size=args.batch_size,
        options=TrainOptions(lr=args.lr, itm_weight=0.0),
        progress=report,
    )
    return f"local-dir:{pretrained.out_dir}"


def train_recipe(args: argparse.Namespace, data: Path, rows: list, model: str | None):
    """Stage 2: towers and head jointly, or the head alone on a pretrained model's towers."""
    options = TrainOptions(
        lr=args.lr,
        itm_weight=args.itm_weight,
        twin_listwise=args.twin_listwise,
        itm_tower_grad=args.itm_tower_grad,
        itc_group_negatives=args.itc_group_negatives,
        head=json.loads(args.head),
    )
    return train(
        [(str(data / r.image), r.caption, r.negatives) for r in rows],
        args.cache / "runs" / run_name(args),
        model=model,
        lock_image=model is not None,
        lock_text=model is not None,
        epochs=args.epochs,
        seed=args.seed,
        batch_size=args.batch_size,
        groups=[r.group for r in rows] if args.group_batches else None,
        options=options,
        progress=report,
    )


def evaluate_recipe(out_dir: Path, data: Path) -> dict:
    """Stage 3: ITC alone and reranked, on the held-out twin groups."""
    trained = load_trained(out_dir)
    test = sw.read_test(data / "test.jsonl")
    return evaluate(
        trained,
        [(data / r.image, r.caption) for r in test],
        twin_groups=[r.group for r in test],
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    logging.getLogger("indexer").setLevel(logging.INFO)
    torch.set_num_threads(args.threads)
    times = {}

    started = time.perf_counter()
    data = generate(args)
    rows = sw.read_train(data / "train.jsonl")
    times["generate_s"] = time.perf_counter() - started
    model = None
    if args.pretrain_listings:
        started = time.perf_counter()
        model = pretrain_on_listings(args, data, rows)
        times["pretrain_s"] = time.perf_counter() - started
    started = time.perf_counter()
    result = train_recipe(args, data, rows, model)
    times["train_s"] = time.perf_counter() - started
    started = time.perf_counter()
    scores = evaluate_recipe(result.out_dir, data)
    times["evaluate_s"] = time.perf_counter() - started
    times["total_s"] = sum(times.values())

    print(markdown(scores))
    print(" | ".join(f"{k} {v:.0f}" for k, v in times.items()))
    record = {
        "run": run_name(args),
        "args": {k: str(v) for k, v in vars(args).items()},
        "times": times,
        "alpha": result.alpha,
        "platt": result.platt,
        "scores": scores,
        "cpu": platform.processor() or platform.machine(),
        "threads": args.threads,
        "torch": torch.__version__,
    }
    write_json(OUT_DIR / "shapes_recipe.json", record)
    return 0


if __name__ == "__main__":
    sys.exit(main())
