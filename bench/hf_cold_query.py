"""Cold query benchmark for a model whose text side is a Hugging Face tokenizer (issue 15).

Run with the project's interpreter, under `nice` on a shared machine:

    nice -n 5 .venv/bin/python bench/hf_cold_query.py [--runs N] [--cache DIR]

Builds once, offline, into DIR/models/vit-b-16-siglip-random-seed0/ an open_clip model folder
(`local-dir:` layout) with open_clip's own `ViT-B-16-SigLIP` config (timm ViT-B/16 image tower,
12-layer 768-wide text tower, vocabulary 32,000, context length 64, padded with "</s>",
canonicalised text) and random weights (seed 0). Its tokenizer is T5-like, written here with
the `tokenizers` library: a SentencePiece Unigram model with 32,000 synthetic pieces (Latin,
accents, CJK, kana, Arabic, Cyrillic), as many as SigLIP's (its load time grows with their
number), "$A </s>" post-processing and NFKC. Then indexes the 62 photos once (into
DIR/hf-cold-query/index, `--model local-dir:FOLDER`, which exports the towers and
tokenizer.json) and times cold
`photoseek search TEXT --json` runs, each a new process with a text of its own in one of
several scripts, alternating with the same runs on the ViT-B-32-256 (CLIP BPE) 10,000-image
index of `bench/query_bench.py` where that one exists. Random weights: speed only.
Results are printed and written to bench/out/hf_cold_query.json.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
from pathlib import Path

from lib import OUT_DIR
from lib.cache import DEFAULT_CACHE, Paths, ensure_photos
from lib.cpu import cpu_facts
from lib.peer import peer_env, photoseek_bin
from lib.script import command_line, run_script
from lib.tables import say, table, write_json
from lib.timing import BenchError, Run, alternating, run_child

OUT_FILE = OUT_DIR / "hf_cold_query.json"
Cmd = list[str | os.PathLike[str]]
ARCH = "ViT-B-16-SigLIP"
VOCAB = 32_000
COLD_TARGET_S = 0.8
CLIP_INDEX = Path("query-10000") / "index"  # bench/query_bench.py's ViT-B-32-256 index
# One text per cold run (and per index): Latin with accents, CJK, kana, Arabic, Cyrillic,
# Devanagari, Hangul, emoji; a run number past the list is appended to keep each text new.
TEXTS = ("a dog on a beach at dawn", "Crème brûlée à Paris, déjà vu", "一只猫坐在窗台上看雨",
         "東京の夜景と桜の花", "قطة تجلس على النافذة", "собака бежит по снегу",
         "पहाड़ों पर सूर्योदय", "바닷가의 등대", "sunset 🌅 over the sea 🐶", "zwei Fahrräder im Regen",
         "一座古老的石桥", "el perro duerme junto al fuego")  # fmt: skip
# Characters the synthetic vocabulary's pieces are drawn from (the texts' scripts among them).
_ALPHABET = (
    "abcdefghijklmnopqrstuvwxyzéèêàâçôûüöäßñ"
    "的一是不了人我在有他这中大来上国个到说们为子和你地出道也时年猫窗台雨桥石古老座"
    "あいうえおかきくけこさしすせそたちつてとなにぬねのはひふへほまみむめもやゆよらりるれろわをん東京夜景桜花"
    "ابتثجحخدذرزسشصضطظعغفقكلمنهوي"
    "абвгдежзийклмнопрстуфхцчшщыьэюя"
)
_SPECIALS = ["<pad>", "</s>", "<unk>"]  # T5's ids 0, 1, 2; SigLIP pads with "</s>"


def model_folder(paths: Paths) -> Path:
    return paths.cache / "models" / "vit-b-16-siglip-random-seed0"


def ensure_model(paths: Paths) -> Path:
    """The SigLIP-size model folder with random weights and a T5-size tokenizer, built once."""
    folder = model_folder(paths)
    done = folder / "bench.complete"
    if done.exists():
        return folder
    import open_clip
    import torch

    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    say(f"setup: writing a random {ARCH} with a {VOCAB:,}-piece tokenizer to {folder}")
    write_tokenizer(folder)
    model_cfg = open_clip.get_model_config(ARCH)
    if model_cfg is None:
        raise BenchError(f"open_clip has no {ARCH} config")
    # Any non-empty name selects the HF tokenizer; with `local-dir:` open_clip reads the folder.
    model_cfg["text_cfg"]["hf_tokenizer_name"] = str(folder)
    preprocess = {"mean": [0.5] * 3, "std": [0.5] * 3, "interpolation": "bicubic",
                  "resize_mode": "squash"}  # fmt: skip
    config = {"model_cfg": model_cfg, "preprocess_cfg": preprocess}
    (folder / "open_clip_config.json").write_text(json.dumps(config, indent=2))
    torch.manual_seed(0)
    model = open_clip.create_model(f"local-dir:{folder}")  # no weights yet: random, seed 0
    torch.save(model.state_dict(), folder / "open_clip_pytorch_model.bin")
    done.write_text("ok\n")
    return folder


def write_tokenizer(folder: Path) -> None:
    """A T5-like SentencePiece Unigram tokenizer with VOCAB pieces, saved the way transformers
    saves SigLIP's (tokenizer.json and its special tokens)."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    rng = random.Random(0)
    pieces = dict.fromkeys(["▁", *_ALPHABET, *("▁" + c for c in _ALPHABET)])
    while len(pieces) < VOCAB - len(_SPECIALS):
        word = "".join(rng.choices(_ALPHABET, k=rng.randint(2, 7)))
        pieces[("▁" if rng.random() < 0.5 else "") + word] = None
    vocab = [(s, 0.0) for s in _SPECIALS]
    vocab += [(p, -2.0 - i / 1000) for i, p in enumerate(pieces)]
    tok = Tokenizer(models.Unigram(vocab, unk_id=_SPECIALS.index("<unk>")))
    tok.normalizer = normalizers.NFKC()
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    eos = _SPECIALS.index("</s>")
    tok.post_processor = processors.TemplateProcessing(
        single="$A </s>", special_tokens=[("</s>", eos)]
    )
    hf = PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="</s>", eos_token="</s>", unk_token="<unk>"
    )
    hf.save_pretrained(folder)


def ensure_index(paths: Paths, folder: Path) -> Path:
    """The 62 photos indexed once with the model folder (its towers exported on the way)."""
    index = paths.cache / "hf-cold-query" / "index"
    done = index.parent / "index.complete"
    if done.exists():
        return index
    shutil.rmtree(index, ignore_errors=True)
    model = f"local-dir:{folder}"
    cmd: Cmd = [photoseek_bin(), "index", paths.photos, "--index", index, "--model", model]
    say(f"setup: indexing {paths.photos} with {ARCH} (random weights)")
    run_child([*cmd, "--json"], env=peer_env(paths), what="photoseek index")
    done.write_text("ok\n")
    return index


def cold_text(run: int) -> str:
    return f"{TEXTS[run % len(TEXTS)]} {run // len(TEXTS) or ''}".strip()


def cold_runs(paths: Paths, indexes: dict[str, Path], runs: int) -> dict[str, list[dict]]:
    """`runs` cold `photoseek search TEXT --json` per index, alternated, each with its own
    text; each sample with the load average read right after it."""
    env = peer_env(paths)

    def search(name: str, text: str) -> Run:
        where = indexes[name]
        cmd: Cmd = [photoseek_bin(), "search", text, "--index", where, "-k", "10", "--json"]
        return run_child(cmd, env=env, what=f"photoseek search ({name})")

    for name in indexes:
        search(name, "a warm-up")  # the page cache, and any first-query export, not timed
    samples: dict[str, list[dict]] = {name: [] for name in indexes}
    names = list(indexes)
    both = len(names) == 2
    order = alternating(runs, *names) if both else ((run, names[0]) for run in range(runs))
    for run, name in order:
        text = cold_text(run)
        done = search(name, text)
        hits = len(json.loads(done.stdout or "[]"))
        load = os.getloadavg()[0]
        samples[name].append({"text": text, **done.public(), "load_1min": round(load, 2),
                              "results": hits})  # fmt: skip
        say(f"  {name:10s} {done.wall_s:6.3f} s  load {load:4.2f}  {text}")
    return samples


def summary(samples: list[dict]) -> dict:
    walls = [s["wall_s"] for s in samples]
    med = statistics.median(walls)
    return {"runs": len(walls), "median_s": round(med, 3), "min_s": round(min(walls), 3),
            "max_s": round(max(walls), 3),
            "median_peak_rss_mb": round(statistics.median(s["peak_rss_mb"] for s in samples)),
            "median_load_1min": round(statistics.median(s["load_1min"] for s in samples), 2),
            "meets_target": med <= COLD_TARGET_S}  # fmt: skip


def markdown(result: dict) -> str:
    labels = {"siglip": f"{ARCH} (HF tokenizer), 62 images",
              "clip": "ViT-B-32-256 (CLIP BPE), 10,000 images"}  # fmt: skip
    rows = [
        [labels[name], f"{s['median_s']:.3f} s", f"{s['min_s']:.3f} s", f"{s['max_s']:.3f} s",
         f"{s['median_peak_rss_mb']} MB", f"{s['median_load_1min']:.2f}"]
        for name, s in result["summary"].items()
    ]  # fmt: skip
    header = ["Cold `photoseek search TEXT --json`", "median", "min", "max", "peak RSS",
              "load (1 min, median)"]  # fmt: skip
    return "\n".join([
        f"`{result['command']}` (nice {result['nice']}) — {result['cpu']['label']}; random "
        f"weights, {result['runs']} runs per index, a new text in a new process each run.",
        "",
        *table(header, "lrrrrr", rows),
    ])  # fmt: skip


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=8)
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    args = parser.parse_args(argv)
    paths = Paths(args.cache)
    os.environ.update(HF_HUB_OFFLINE="1", XDG_CACHE_HOME=str(paths.xdg_cache))
    ensure_photos(paths)
    indexes = {"siglip": ensure_index(paths, ensure_model(paths))}
    if (paths.cache / CLIP_INDEX / "bench.complete").exists():
        indexes["clip"] = paths.cache / CLIP_INDEX
    load_start = os.getloadavg()
    samples = cold_runs(paths, indexes, args.runs)
    result = {"command": command_line("hf_cold_query.py", argv), "cpu": cpu_facts(),
              "runs": args.runs, "nice": os.nice(0), "loadavg_at_start": load_start,
              "loadavg_at_end": os.getloadavg(),
              "summary": {name: summary(s) for name, s in samples.items()},
              "samples": samples}  # fmt: skip
    result["markdown"] = markdown(result)
    write_json(OUT_FILE, result)
    say(json.dumps(result["summary"]))
    say(result["markdown"])


if __name__ == "__main__":
    run_script("hf_cold_query", main)
