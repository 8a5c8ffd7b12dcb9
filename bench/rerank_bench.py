"""Warm rerank speed of the pretrained ITM rerankers at base size (issue 12, "Speed").

Run with the project's interpreter, under `nice` on a shared machine:

    nice -n 5 .venv/bin/python bench/rerank_bench.py [--kinds blip,vilt,...] [--ks 8,16,32]
        [--reps N] [--precisions fp32,bf16] [--cache DIR]

Builds once, offline, into DIR/rerankers/<kind>-base-random-seed0/ each reranker from its
transformers default config (BLIP ITM base: ViT-B/16 at 384 px + BERT-base text; ViLT;
BridgeTower; FLAVA) with random weights (seed 0), saved with `save_pretrained` beside a
processor whose tokenizer has a hand-written vocabulary and whose image processor has the
model's real size. Each is then opened as `photoseek search --reranker DIR` opens it
(`search.rerank.kinds.open_reranker`) and its `rerank` timed on k of the real photos in
DIR/photos, warm (the model loaded, one rerank run first): BLIP with and without a warm vision
cache, the others per pair. FLOPs per pair are counted on one pair with torch's
`FlopCounterMode` (BLIP: the full pair and what remains after the cache) and the rates set
against this CPU's fp32 and bf16 matmul ceilings (bench/lib/gemm.py). `bf16` times the same
call with the scorer's bf16 autocast ($PHOTOSEEK_RERANK_PRECISION=bf16, search.rerank.backend),
fp32 as photoseek runs by default; fp32 only at `--fp32-ks` (time is linear in k).
Random weights: speed only. Results are printed and written to bench/out/rerank_bench.json.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lib import OUT_DIR
from lib.cache import DEFAULT_CACHE, Paths, ensure_photos
from lib.cpu import cpu_facts
from lib.machine import code_fingerprint
from lib.script import command_line, run_script
from lib.tables import say, table, write_json
from lib.timing import BenchError

OUT_FILE = OUT_DIR / "rerank_bench.json"
KINDS = ("blip", "vilt", "bridgetower", "flava")
WORDS = ("a an the red blue green small big old new dog cat bird boat car tree house sky sea "
         "beach mountain city street night sunset snow river bridge photo of on in at with and "
         "under near two people walking").split()  # fmt: skip
SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
# 30 words: 32 text tokens with [CLS] and [SEP] (<s>, </s> for BridgeTower's RoBERTa), as the
# issue's per-pair FLOP figures assume.
QUERY = ("a red boat on the sea at sunset near an old bridge with two people walking on the "
         "beach under a blue sky and a big green tree in the city street at night")  # fmt: skip
BLIP_TARGET_S = 2.0  # BLIP-base, warm vision cache, k = 16, 2-core CPU with native bf16


def folder_for(paths: Paths, kind: str) -> Path:
    return paths.cache / "rerankers" / f"{kind}-base-random-seed0"


def _bert_tokenizer(folder: Path) -> Any:
    from transformers import BertTokenizer

    vocab = folder / "vocab.txt"
    vocab.write_text("\n".join(SPECIALS + WORDS) + "\n")
    return BertTokenizer(str(vocab))


def _roberta_tokenizer(folder: Path) -> Any:
    """Byte-level BPE whose merges spell each word (with and without its leading space) whole,
    so a word is one token as in the real vocabulary."""
    from transformers import RobertaTokenizer

    specials = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
    tokens, merges = list(specials) + list("abcdefghijklmnopqrstuvwxyzĠ"), []
    for word in WORDS:
        for spelled in (f"Ġ{word}", word):
            for end in range(2, len(spelled) + 1):
                merges.append(f"{spelled[: end - 1]} {spelled[end - 1]}")
                tokens.append(spelled[:end])
    vocab = {t: i for i, t in enumerate(dict.fromkeys(tokens))}
    (folder / "vocab.json").write_text(json.dumps(vocab))
    lines = ["#version: 0.2", *dict.fromkeys(merges)]
    (folder / "merges.txt").write_text("\n".join(lines) + "\n")
    return RobertaTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"))


def _model_and_processor(kind: str, folder: Path) -> tuple[Any, Any]:
    """The default-config (base size) model with random weights, and its processor; the image
    processors' defaults are the models' real sizes (BLIP 384, ViLT 384, BridgeTower 288,
    FLAVA 224)."""
    import transformers as t

    if kind == "blip":
        model = t.BlipForImageTextRetrieval(t.BlipConfig())
        return model, t.BlipProcessor(t.BlipImageProcessor(), _bert_tokenizer(folder))
    if kind == "vilt":
        model = t.ViltForImageAndTextRetrieval(t.ViltConfig())
        return model, t.ViltProcessor(t.ViltImageProcessor(), _bert_tokenizer(folder))
    if kind == "bridgetower":
        model = t.BridgeTowerForImageAndTextRetrieval(t.BridgeTowerConfig())
        images = t.BridgeTowerImageProcessor()
        return model, t.BridgeTowerProcessor(images, _roberta_tokenizer(folder))
    model = t.FlavaForPreTraining(t.FlavaConfig())
    return model, t.FlavaProcessor(t.FlavaImageProcessor(), _bert_tokenizer(folder))


def ensure_reranker(paths: Paths, kind: str) -> Path:
    """The base-size `kind` checkpoint folder, built and saved once."""
    folder = folder_for(paths, kind)
    done = folder / "bench.complete"
    if done.exists():
        return folder
    import torch

    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    say(f"setup: writing a random base-size {kind} reranker to {folder}")
    torch.manual_seed(0)
    model, processor = _model_and_processor(kind, folder)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    done.write_text(f"{sum(p.numel() for p in model.parameters())}\n")
    return folder


def candidates(photos: list[Path], k: int) -> list[Any]:
    """k hits over the real photos (cycling if there are fewer), as the engine hands them on."""
    from search.hits import Hit

    chosen = [photos[i % len(photos)] for i in range(k)]
    return [Hit(i, os.fsencode(p), 0.5 - i / 1000, None, None, None) for i, p in
            enumerate(chosen)]  # fmt: skip


def _no_tokens(ids: list[int]) -> dict:
    return {}  # cross-encoders read the candidates' files, never the stored ITM tokens


def timed(run: Callable[[], object], reps: int) -> float:
    """The median seconds of `reps` calls of `run` (at least one)."""
    times = []
    for _ in range(max(reps, 1)):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def model_run(reranker: Any, mode: str, read: list[Any], images: list[Any]) -> Callable[[], object]:
    """One query's model work on already decoded candidates: per pair, the scorer's batches
    over the decoded images; with the cache, the reranker's own batches over the cached
    vision outputs (read from the cache folder, as a query does)."""
    scorer = reranker.scorer
    if mode == "warm vision cache":
        return lambda: reranker.logits(QUERY, read)
    size = scorer.batch
    return lambda: [scorer.logits(QUERY, images[i : i + size]) for i in range(0, len(images), size)]


def flops_per_pair(scorer: Any, photo: Path) -> dict[str, float]:
    """GFLOP of one pair: `full` through `logits`; for a split scorer (BLIP) also `vision`
    (the cached side) and `after_cache` (`logits_from_vision`)."""
    from PIL import Image
    from torch.utils.flop_counter import FlopCounterMode

    image = Image.open(photo).convert("RGB")
    counted = {}
    with FlopCounterMode(display=False) as counter:
        scorer.logits(QUERY, [image])
    counted["full"] = counter.get_total_flops() / 1e9
    if hasattr(scorer, "logits_from_vision"):
        with FlopCounterMode(display=False) as counter:
            vision = scorer.vision([image])
        counted["vision"] = counter.get_total_flops() / 1e9
        with FlopCounterMode(display=False) as counter:
            scorer.logits_from_vision(QUERY, vision)
        counted["after_cache"] = counter.get_total_flops() / 1e9
    return counted


def ceilings(reps: int) -> dict[str, float]:
    """This CPU's best matmul rate (GFLOP/s) in fp32 and bf16, on ViT-B block GEMMs (577 x 768:
    BLIP's 384 px image tokens)."""
    from lib.gemm import GemmSuite

    rates = {}
    for prec in ("fp32", "bf16"):
        suite = GemmSuite(rows=577, d=768, reps=reps, precision=prec)
        suite()
        suite()
        rates[prec] = suite.report()[f"{prec}_gflop_per_s"]
    return rates


def bench_kind(kind: str, folder: Path, photos: list[Path], args: argparse.Namespace) -> dict:
    """One reranker's FLOPs, parameters and warm times per (mode, precision, k)."""
    from indexer.media import decode as decoding
    from indexer.media.discovery import extension
    from search.rerank.cross_encoder import CrossEncoderReranker, read_candidate
    from search.rerank.kinds import open_reranker

    scratch = Path(tempfile.mkdtemp(prefix=f"rerank-{kind}-", dir=args.scratch))
    started = time.perf_counter()
    opened = open_reranker(str(folder), scratch)
    load_s = time.perf_counter() - started
    scorer = opened.reranker.scorer
    model = scorer.model
    record: dict[str, Any] = {
        "checkpoint": str(folder), "load_s": load_s,
        "params_m": sum(p.numel() for p in model.parameters()) / 1e6,
        "runs_in_dtype": str(model.dtype), "image_size": scorer.image_size(),
        "gflop_per_pair": flops_per_pair(scorer, photos[0]), "times": [],
    }  # fmt: skip
    modes = {"per pair": CrossEncoderReranker(scorer, opened.reranker.fusion, None)}
    if opened.reranker.cache is not None:
        modes["warm vision cache"] = opened.reranker
    hits = candidates(photos, max(args.ks))
    read = [read_candidate(h) for h in hits]
    images = [decoding.load_rgb(c.data, extension(c.hit.path), scorer.image_size()) for c in read]
    for mode, reranker in modes.items():
        flop = record["gflop_per_pair"]["after_cache" if mode == "warm vision cache" else "full"]
        for prec in args.precisions:
            scorer.precision = prec  # the product's own bf16 autocast (search.rerank.backend)
            # untimed: warm the kernels; with the cache, fill it for every k
            warm = max(args.ks) if mode == "warm vision cache" else min(args.ks)
            reranker.rerank(_no_tokens, QUERY, hits[:warm])
            for k in args.fp32_ks if prec == "fp32" else args.ks:
                seconds = timed(model_run(reranker, mode, read[:k], images[:k]), args.reps)
                row = {"mode": mode, "precision": prec, "k": k, "model_s": seconds,
                       "gflop_per_s": flop * k / seconds}  # fmt: skip
                if k == min(args.ks):  # the whole query: read, hash, decode the files too
                    started = time.perf_counter()
                    reranker.rerank(_no_tokens, QUERY, hits[:k])
                    row["files_s"] = time.perf_counter() - started
                say(f"  {kind} {mode} {prec} k={k}: model {seconds:.2f} s")
                record["times"].append(row)
    shutil.rmtree(scratch, ignore_errors=True)
    return record


def report(result: dict) -> list[str]:
    ceiling = result["ceilings_gflop_per_s"]
    lines = [f"CPU: {result['cpu']['label']}; load at start {result['loadavg_at_start']}; "
             f"matmul ceilings: fp32 {ceiling['fp32']:.0f}, bf16 {ceiling['bf16']:.0f} GFLOP/s",
             ""]  # fmt: skip
    rows = []
    for kind, rec in result["rerankers"].items():
        flop = rec["gflop_per_pair"]
        for row in rec["times"]:
            pair = flop["after_cache" if row["mode"] == "warm vision cache" else "full"]
            rows.append([
                kind, f"{rec['params_m']:.0f}M", row["mode"], row["precision"], str(row["k"]),
                f"{row['model_s']:.2f}",
                f"{row['files_s']:.2f}" if "files_s" in row else "", f"{pair:.1f}",
                f"{row['gflop_per_s']:.0f}",
                f"{row['gflop_per_s'] / ceiling[row['precision']]:.0%}",
            ])  # fmt: skip
    header = ["reranker", "params", "mode", "precision", "k", "model s/query",
              "with file decode s", "GFLOP/pair",
              "GFLOP/s", "of matmul ceiling"]  # fmt: skip
    return lines + table(header, "lllllrrrrr", rows)


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="rerank_bench.py", description=__doc__.splitlines()[0])
    parser.add_argument("--kinds", default=",".join(KINDS), help="comma-separated (%(default)s)")
    parser.add_argument("--ks", default="8,16,32", help="candidates per query (%(default)s)")
    parser.add_argument("--reps", type=int, default=1, help="timed reranks per k (median)")
    parser.add_argument("--precisions", default="bf16,fp32", help="bf16 autocast and/or fp32")
    parser.add_argument(
        "--fp32-ks",
        default="8",
        help="k measured in fp32 (%(default)s: time is linear in k, fp32 slow)",
    )
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    parser.add_argument("--out", type=Path, default=OUT_FILE)
    args = parser.parse_args(argv)
    kinds = [k for k in args.kinds.split(",") if k]
    if unknown := sorted(set(kinds) - set(KINDS)):
        raise BenchError(f"unknown --kinds {','.join(unknown)} (choose from {','.join(KINDS)})")
    args.ks = [int(k) for k in args.ks.split(",") if k]
    args.fp32_ks = [int(k) for k in args.fp32_ks.split(",") if k]
    args.precisions = [p for p in args.precisions.split(",") if p]
    if bad := sorted(set(args.precisions) - {"fp32", "bf16"}):
        raise BenchError(f"unknown --precisions {','.join(bad)} (fp32, bf16)")
    paths = Paths(args.cache)
    args.scratch = paths.scratch
    args.scratch.mkdir(parents=True, exist_ok=True)
    photos = ensure_photos(paths)
    fingerprint = code_fingerprint()
    started = time.perf_counter()
    result: dict[str, Any] = {
        "command": command_line("rerank_bench.py", argv), "cpu": cpu_facts(),
        "loadavg_at_start": os.getloadavg(), "uptime": _uptime(), "query": QUERY,
        "ceilings_gflop_per_s": ceilings(reps=5), "rerankers": {},
    }  # fmt: skip
    for kind in kinds:
        folder = ensure_reranker(paths, kind)
        say(f"{kind}: timing")
        result["rerankers"][kind] = bench_kind(kind, folder, photos, args)
    result["loadavg_at_end"] = os.getloadavg()
    result["runtime_s"] = time.perf_counter() - started
    result["code_changed_during_run"] = code_fingerprint() != fingerprint
    write_json(args.out, result)
    say("\n" + "\n".join(report(result)))
    say(f"\nruntime {result['runtime_s']:.0f} s; written to {args.out}")


def _uptime() -> str:
    with contextlib.suppress(OSError):
        return Path("/proc/loadavg").read_text().strip()
    return "?"


if __name__ == "__main__":
    run_script("rerank_bench.py", main)
