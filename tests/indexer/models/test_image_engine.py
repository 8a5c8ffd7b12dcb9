"""The ONNX Runtime int8 image engine and how `--precision auto` picks an engine per CPU."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from helpers import assert_runs_without_torch, run, write_image
from indexer.errors import BadModelSpec
from indexer.media.decode import decode
from indexer.models.embedder import ImageEmbedder
from indexer.models.loading import ModelSpec, load_model, resolve_precision
from indexer.models.precision import cpu_features, native_bf16_in
from indexer.towers.image_engine import open_image_embedder, open_onnx_engine


def _decoded(folder: Path, size: int, count: int = 12) -> np.ndarray:
    """Real image files written and decoded as the indexer decodes them: [N, S, S, 3] uint8."""
    folder.mkdir()
    pixels = []
    for i in range(count):
        path = folder / f"photo {i}.jpg"
        write_image(path, seed=i, size=(120 + 7 * i, 90))
        pixels.append(decode(path.read_bytes(), b".jpg", size).pixels)
    return np.stack(pixels)


@pytest.mark.parametrize("precision", ["int8", "fp32"])
def test_onnx_engine_agrees_with_torch_fp32(tmp_path, tiny_checkpoint, precision):
    spec = ModelSpec.parse(tiny_checkpoint)
    reference = ImageEmbedder(load_model(spec, "fp32", "cpu", "image"))
    engine = open_onnx_engine(spec, precision)
    pixels = _decoded(tmp_path / "photos", engine.image_size)
    expected, got = reference(pixels), engine(pixels)
    assert got.shape == expected.shape and got.dtype == np.float32
    cosines = (got * expected).sum(axis=1)
    assert cosines.min() >= (0.9999 if precision == "fp32" else 0.995), cosines
    assert np.allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    # int8 is not fp32 in disguise: its weights really were quantised
    if precision == "int8":
        assert not np.allclose(got, expected, atol=1e-5)
    assert (engine.precision, engine.engine) == (precision, "onnxruntime")


def test_cached_engine_embeds_without_torch(tiny_checkpoint):
    open_onnx_engine(ModelSpec.parse(tiny_checkpoint), "int8")  # built (with torch) once
    assert_runs_without_torch(
        "import numpy as np\n"
        "from indexer.models.loading import ModelSpec\n"
        "from indexer.towers.image_engine import open_image_embedder\n"
        f"e = open_image_embedder(ModelSpec.parse({tiny_checkpoint!r}), 'int8', 'cpu')\n"
        "v = e.with_tokens(np.zeros((3, e.image_size, e.image_size, 3), np.uint8))[0]\n"
        "assert v.shape == (3, e.dim), v.shape\n"
    )


def test_open_image_embedder_follows_the_precision(tiny_checkpoint):
    spec = ModelSpec.parse(tiny_checkpoint)
    assert open_image_embedder(spec, "int8", "cpu").engine == "onnxruntime"
    exact = open_image_embedder(spec, "fp32", "cpu")
    assert (exact.engine, exact.precision) == ("torch", "fp32")  # --precision fp32 stays exact


@pytest.mark.parametrize(
    ("device", "native_bf16", "indexer", "other"),
    [
        ("cpu", False, "int8", "fp32"),
        ("cpu", True, "int8", "bf16"),
        ("cuda:0", False, "fp16", "fp16"),
        ("mps", False, "fp32", "fp32"),
    ],
)
def test_auto_per_cpu_capability(device, native_bf16, indexer, other):
    assert resolve_precision("auto", device, int8=True, native_bf16=native_bf16) == indexer
    assert resolve_precision("auto", device, native_bf16=native_bf16) == other
    assert resolve_precision("fp32", device, int8=True, native_bf16=native_bf16) == "fp32"


def test_int8_only_where_the_caller_runs_it():
    assert resolve_precision("int8", "cpu", int8=True) == "int8"
    with pytest.raises(BadModelSpec, match="int8 is an indexing precision"):
        resolve_precision("int8", "cpu")


@pytest.mark.parametrize(
    ("features", "native"),
    [
        ({"avx2", "fma", "f16c"}, False),  # an AVX2-only laptop or desktop
        ({"avx512f", "avx512_vnni", "avx512bw"}, False),  # AVX-512 without bf16
        ({"avx512f", "avx512_bf16"}, True),  # Linux: Zen 4/5, Cooper Lake
        ({"amx_bf16", "amx_tile"}, True),  # Linux: Sapphire Rapids
        ({"avx512bf16"}, True),  # macOS sysctl spelling
        ({"asimd", "bf16"}, False),  # arm64: torch's CPU bf16 is not faster there
        (set(), False),  # Windows and others: nothing listed
    ],
)
def test_native_bf16_from_cpu_features(features, native):
    assert native_bf16_in(frozenset(features)) is native


@pytest.mark.skipif(not Path("/proc/cpuinfo").exists(), reason="reads Linux's /proc/cpuinfo")
def test_cpu_features_are_this_cpus():
    flags = next(
        line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags")
    )
    features = cpu_features()
    assert set(flags.partition(":")[2].split()) <= features
    assert resolve_precision("auto", "cpu", int8=True) == "int8"  # the indexer, on any CPU
    torch_auto = "bf16" if native_bf16_in(features) else "fp32"
    assert resolve_precision("auto", "cpu") == torch_auto


def test_index_and_status_report_precision_and_engine(tmp_path, photos, tiny_checkpoint):
    idx = str(tmp_path / "idx")
    args = ("index", str(photos), "--index", idx, "--model", tiny_checkpoint, "--json")
    first = run(*args, "--precision", "int8")
    assert first.returncode == 0, first.stderr
    summary = json.loads(first.stdout)
    assert summary["embedder"] == {"precision": "int8", "engine": "onnxruntime"}
    assert summary["added"] == 9  # existing fields are still there
    status = json.loads(run("status", "--index", idx, "--json").stdout)
    assert status["embedder"] == {"precision": "int8", "engine": "onnxruntime"}
    assert status["images"] == 9
    write_image(photos / "new.png", seed=99)
    second = run("index", "--index", idx, "--precision", "fp32", "--json")
    assert json.loads(second.stdout)["embedder"] == {"precision": "fp32", "engine": "torch"}
    nothing = run("index", "--index", idx, "--json")  # nothing to embed: no engine was used
    assert json.loads(nothing.stdout)["embedder"] is None
    status = json.loads(run("status", "--index", idx, "--json").stdout)
    assert status["embedder"] == {"precision": "fp32", "engine": "torch"}
    assert os.path.isdir(Path(idx) / "towers")  # the query towers were still exported
