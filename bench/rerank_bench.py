"""Warm rerank speed of the pretrained ITM rerankers at base size (issue 12, "Speed").

Run with the project's interpreter, under `nice` on a shared machine:

    OMP_WAIT_POLICY=PASSIVE nice -n 10 .venv/bin/python bench/rerank_bench.py
        [--kinds blip,vilt,...] [--modes pair,cache] [--ks 8,16,32] [--fp32-ks 8]
        [--reps N] [--precisions fp32,bf16] [--cache DIR]

Builds once, offline, into DIR/rerankers/<kind>-base-random-seed0/ each reranker from its
transformers default config (BLIP ITM base: ViT-B/16 at 384 px + BERT-base text; ViLT;
BridgeTower; FLAVA) with random weights (seed 0), saved with `save_pretrained` beside a
processor whose tokenizer has a hand-written vocabulary and whose image processor has the
model's real size. Each is then opened as `photoseek search --reranker DIR` opens it
(`search.rerank.kinds.open_reranker`) and its `rerank` timed on k of the real photos in
DIR/photos, warm (the model loaded, one rerank run first): BLIP with and without a warm vision
cache, the others per pair. FLOPs per pair are counted on one pair with torch's
`FlopCounterMode` (BLIP: the full pair, the cached side, what remains after the cache, and what
transformers' own text encoder would compute there) and the rates set against this CPU's fp32
and bf16 matmul ceilings (bench/lib/gemm.py; `ideal_s` is k pairs at the ceiling). `bf16` times
the same call with the scorer's bf16 path ($PHOTOSEEK_RERANK_PRECISION=bf16,
search.rerank.backend), fp32 as photoseek runs by default; fp32 only at `--fp32-ks`. Each row
records the load average when it was timed. Random weights: speed only. Results are printed
and written to bench/out/rerank_bench.json.
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
# 34 words: 36 text tokens with [CLS] and [SEP] (<s>, </s> for BridgeTower's RoBERTa); the
# issue's per-pair FLOP figures assumed 32.
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
        with FlopCounterMode(display=False) as counter:
            _transformers_text_side(scorer, vision)
        counted["after_cache_transformers"] = counter.get_total_flops() / 1e9
    return counted


def _transformers_text_side(scorer: Any, vision: Any) -> None:
    """BLIP's text encoder and ITM head over `vision` as transformers runs them (for the FLOPs
    photoseek's shorter cross-attention saves)."""
    import torch

    encoded = scorer.processor(text=[QUERY], return_tensors="pt", truncation=True)
    states = torch.from_numpy(vision)
    with torch.inference_mode():
        out = scorer.model.text_encoder(
            input_ids=encoded["input_ids"], attention_mask=encoded["attention_mask"],
            encoder_hidden_states=states,
            encoder_attention_mask=torch.ones(states.shape[:-1], dtype=torch.long),
        )  # fmt: skip
        scorer.model.itm_head(out.last_hidden_state[:, 0, :])


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
    modes = {}
    if "pair" in args.modes:
        modes["per pair"] = CrossEncoderReranker(scorer, opened.reranker.fusion, None)
    if "cache" in args.modes and opened.reranker.cache is not None:
        modes["warm vision cache"] = opened.reranker
    hits = candidates(photos, max(args.ks))
    read = [read_candidate(h) for h in hits]
    images = [decoding.load_rgb(c.data, extension(c.hit.path), scorer.image_size()) for c in read]
    for mode, reranker in modes.items():
        flop = record["gflop_per_pair"]["after_cache" if mode == "warm vision cache" else "full"]
        for prec in args.precisions:
            scorer.precision = prec  # the product's own bf16 path (search.rerank.backend)
            # untimed: warm the kernels; with the cache, fill it for every k
            warm = max(args.ks) if mode == "warm vision cache" else min(args.ks)
            reranker.rerank(_no_tokens, QUERY, hits[:warm])
            for k in args.fp32_ks if prec == "fp32" else args.ks:
                seconds = timed(model_run(reranker, mode, read[:k], images[:k]), args.reps)
                row = {"mode": mode, "precision": prec, "k": k, "model_s": seconds,
                       "gflop_per_s": flop * k / seconds, "loadavg": os.getloadavg(),
                       "ideal_s": flop * k / args.ceilings[prec]}  # fmt: skip
                if k == min(args.ks):  # the whole query: read, hash, decode the files too
                    started = time.perf_counter()
                    reranker.rerank(_no_tokens, QUERY, hits[:k])
                    row["files_s"] = time.perf_counter() - started
                say(f"  {kind} {mode} {prec} k={k}: model {seconds:.2f} s")
                record["times"].append(row)
    if "warm vision cache" in modes and {"fp32", "bf16"} <= set(args.precisions):
        record["bf16_agreement"] = bf16_agreement(scorer, images)
    shutil.rmtree(scratch, ignore_errors=True)
    return record


AGREEMENT_QUERIES = (QUERY, "a dog on the beach", "two people walking in the snow at night",
                     "an old house near a river", "a small bird in a green tree")  # fmt: skip


def bf16_agreement(scorer: Any, images: list[Any]) -> dict:
    """How bf16 ranks the candidates against fp32 on BLIP's cached path, over a few queries.
    The default config draws the vision weights with std 1e-10 (`initializer_range`), so every
    image gives the same logit; they are redrawn here with the text side's std 0.02 (after the
    timings), which spreads the logits over the photos as a trained model's would."""
    import numpy as np
    import torch

    torch.manual_seed(1)
    with torch.no_grad():
        for module in scorer.model.vision_model.modules():
            if isinstance(module, torch.nn.Linear):
                module.weight.normal_(0.0, 0.02)
    scorer.precision, size = "fp32", scorer.batch
    vision = np.concatenate(
        [scorer.vision(images[i : i + size]) for i in range(0, len(images), size)]
    )
    per_query = []
    for text in AGREEMENT_QUERIES:
        runs = {}
        for prec in ("fp32", "bf16"):
            scorer.precision = prec  # bf16 runs the text side only: its copy of it is current
            runs[prec] = np.concatenate([scorer.logits_from_vision(text, vision[i : i + size])
                                         for i in range(0, len(vision), size)])  # fmt: skip
        fp32, bf16 = runs["fp32"], runs["bf16"]
        ranks = [np.argsort(np.argsort(-x)) for x in (fp32, bf16)]
        per_query.append({
            "max_abs_diff": float(np.max(np.abs(bf16 - fp32))), "fp32_spread": float(np.ptp(fp32)),
            "spearman": float(np.corrcoef(*ranks)[0, 1]),
            "same_top1": bool(np.argmax(fp32) == np.argmax(bf16)),
            "top5_overlap": len(set(np.argsort(-fp32)[:5]) & set(np.argsort(-bf16)[:5])) / 5,
        })  # fmt: skip
    return {"candidates": len(images), "vision_weights": "redrawn, std 0.02", "queries": per_query}


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
                f"{row['ideal_s']:.2f}" if "ideal_s" in row else "",
                f"{row['loadavg'][0]:.1f}" if "loadavg" in row else "",
            ])  # fmt: skip
    header = ["reranker", "params", "mode", "precision", "k", "model s/query",
              "with file decode s", "GFLOP/pair",
              "GFLOP/s", "of matmul ceiling", "at ceiling s", "load"]  # fmt: skip
    return lines + table(header, "lllllrrrrrrr", rows) + agreement_lines(result)


def agreement_lines(result: dict) -> list[str]:
    lines = []
    for kind, rec in result["rerankers"].items():
        if agreement := rec.get("bf16_agreement"):
            lines.append(
                f"{kind}: bf16 vs fp32 over {agreement['candidates']} cached candidates "
                f"(vision weights {agreement['vision_weights']}):"
            )
            lines += [
                f"  max |diff| {q['max_abs_diff']:.4f} of spread {q['fp32_spread']:.3f}, "
                f"Spearman {q['spearman']:.3f}, top-1 {'same' if q['same_top1'] else 'differs'}, "
                f"top-5 overlap {q['top5_overlap']:.0%}"
                for q in agreement["queries"]
            ]
    return lines


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="rerank_bench.py", description=__doc__.splitlines()[0])
    parser.add_argument("--kinds", default=",".join(KINDS), help="comma-separated (%(default)s)")
    parser.add_argument("--modes", default="pair,cache", help="per pair and/or warm vision cache")
    parser.add_argument("--ks", default="8,16,32", help="candidates per query (%(default)s)")
    parser.add_argument("--reps", type=int, default=1, help="timed reranks per k (median)")
    parser.add_argument(
        "--precisions", default="fp32,bf16", help="fp32 and/or bf16 (the first fills the cache)"
    )
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
    args.modes = [m for m in args.modes.split(",") if m]
    if bad := sorted(set(args.modes) - {"pair", "cache"}):
        raise BenchError(f"unknown --modes {','.join(bad)} (pair, cache)")
    paths = Paths(args.cache)
    args.scratch = paths.scratch
    args.scratch.mkdir(parents=True, exist_ok=True)
    photos = ensure_photos(paths)
    fingerprint = code_fingerprint()
    started = time.perf_counter()
    import torch

    args.ceilings = ceilings(reps=5)
    result: dict[str, Any] = {
        "command": command_line("rerank_bench.py", argv), "cpu": cpu_facts(),
        "torch_threads": torch.get_num_threads(), "nice": os.nice(0),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
        "loadavg_at_start": os.getloadavg(), "uptime": _uptime(), "query": QUERY,
        "ceilings_gflop_per_s": args.ceilings, "rerankers": {},
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
