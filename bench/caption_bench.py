"""Captions in the shapes world, end to end: train a tiny CoCa, caption the held-out gallery.

Run with the project's interpreter (on a shared machine, nicely):

    nice -n 5 .venv/bin/python bench/caption_bench.py [--train-groups N] [--epochs E]
        [--batch-size B] [--threads T]

Stages (each timed):
  1. generate: the shapes-world dataset of `shapes_recipe.py` (the same cached folder): N train
     twin groups (4N images) and the held-out test gallery (250 groups, 1,000 images).
  2. train: `indexer.training.coca_train.train_captioner` from scratch (`photoseek-shapes-coca`:
     contrastive + 2 x captioning loss) on the training images and their full captions.
  3. caption: the gallery through `indexer.captioning.load_captioner(DIR)`, greedy decoding.
  4. score: exact-caption accuracy, and per slot kind (colour, shape, relation) the share of
     slots the generated caption fills right when read back with the grammar's vocabulary
     (a caption that does not parse is wrong in every slot it lacks); and the held-out caption
     loss (nats per token, teacher forced; chance is ln 49408 = 10.8).

The defaults (4,000 images, 8 epochs: 2,000 steps of 16 at learning rate 1e-3 after 50 warmup
steps) train at about 7 steps a second on two idle CPU cores (about 5 minutes), several times
slower on a shared machine. The old ones (one epoch at 1e-2) learnt the grammar alone: one
caption for every image, every slot at chance. The record also has the caption loss against
mismatched images (another group's); the gap to the true pairs' loss is what the decoder reads
from the picture.

Prints a markdown table and writes bench/out/caption_bench.json.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch
from lib import OUT_DIR
from lib.machine import cpu_model
from lib.tables import say, table, write_json
from PIL import Image
from shapes_recipe import generate

from indexer.captioning import load_captioner
from indexer.datasets import shapes_world as sw
from indexer.training.coca_metrics import caption_accuracy, held_out_caption_loss
from indexer.training.coca_train import CocaOptions, CocaProgress, CocaResult, train_captioner
from indexer.training.options import TrainOptions


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", type=Path, default=Path("/tmp/photoseek-shapes"))
    parser.add_argument("--train-groups", type=int, default=1000)
    parser.add_argument("--test-groups", type=int, default=250)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--warmup", type=int, default=50, help="warmup steps")
    parser.add_argument("--caption-batch", type=int, default=125)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    return parser.parse_args(argv)


def report(p: CocaProgress) -> None:
    if p.step % 25 == 0 or p.step == p.steps:
        say(
            f"epoch {p.epoch} step {p.step}/{p.steps} contrastive {p.contrastive_loss:.3f} "
            f"caption {p.caption_loss:.3f} {p.images_per_s:.0f} img/s"
        )


def train(args: argparse.Namespace, data: Path) -> CocaResult:
    """Stage 2: the CoCa, trained from scratch into the cache's runs/."""
    rows = sw.read_train(data / "train.jsonl")
    run = f"coca_g{args.train_groups}_e{args.epochs}_b{args.batch_size}_lr{args.lr}_s{args.seed}"
    return train_captioner(
        [(data / r.image, r.caption) for r in rows],
        args.cache / "runs" / run,
        epochs=args.epochs,
        seed=args.seed,
        batch_size=args.batch_size,
        groups=[r.group for r in rows],
        options=CocaOptions(train=TrainOptions(lr=args.lr, warmup_steps=args.warmup)),
        progress=report,
        device="cpu",
    )


def caption_gallery(folder: Path, images: list[Path], batch: int) -> list[str]:
    """Stage 3: a greedy caption per gallery image, through photoseek's captioner."""
    captioner = load_captioner(str(folder), device="cpu")
    captions: list[str] = []
    for start in range(0, len(images), batch):
        opened = [Image.open(path) for path in images[start : start + batch]]
        captions += captioner.caption(opened)
    return captions


def markdown(scores: dict[str, float], times: dict[str, float], record: dict) -> str:
    rows = [
        [
            f"{record['train_images']}",
            f"{record['steps']}",
            f"{scores['exact']:.1f}",
            f"{scores['colour']:.1f}",
            f"{scores['shape']:.1f}",
            f"{scores['relation']:.1f}",
            f"{record['held_out_caption_loss']:.2f}",
            f"{record['mismatched_caption_loss']:.2f}",
            f"{times['train_s']:.0f}",
            f"{times['caption_s']:.1f}",
        ]
    ]
    header = ["train images", "steps", "exact %", "colour %", "shape %", "relation %"]
    header += ["caption loss", "mismatched loss", "train s", "caption s"]
    return "\n".join(table(header, "rrrrrrrrrr", rows))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    times: dict[str, float] = {}
    load_at_start = os.getloadavg()

    started = time.perf_counter()
    data = generate(args)
    times["generate_s"] = time.perf_counter() - started
    started = time.perf_counter()
    result = train(args, data)
    folder = result.out_dir
    times["train_s"] = time.perf_counter() - started

    test = sw.read_test(data / "test.jsonl")
    truth = [r.caption for r in test]
    started = time.perf_counter()
    captions = caption_gallery(folder, [data / r.image for r in test], args.caption_batch)
    times["caption_s"] = time.perf_counter() - started
    scores = caption_accuracy(captions, truth)
    pairs = list(zip([data / r.image for r in test], truth, strict=True))
    train_images = 4 * args.train_groups
    record = {
        "args": {k: str(v) for k, v in vars(args).items()},
        "train_images": train_images,
        "steps": result.steps,
        "gallery_images": len(test),
        "scores": scores,
        "held_out_caption_loss": held_out_caption_loss(folder, pairs),
        # the same captions against other groups' images: how much of the loss the picture saves
        "mismatched_caption_loss": held_out_caption_loss(folder, pairs, mismatched=True),
        "times": times,
        "examples": [
            {"truth": t, "caption": c} for t, c in zip(truth[:12], captions, strict=False)
        ],
        "cpu": cpu_model(),
        "threads": args.threads,
        "loadavg": {"start": load_at_start, "end": os.getloadavg()},
        "torch": torch.__version__,
    }
    say(markdown(scores, times, record))
    say(f"CPU: {record['cpu']}, {args.threads} threads, load {load_at_start[0]:.1f} at start")
    write_json(OUT_DIR / "caption_bench.json", record)
    return 0


if __name__ == "__main__":
    sys.exit(main())
