"""Model specs, loading through the users' paths, offline errors and precision."""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from helpers import TINY, run, write_image
from indexer.errors import BadModelSpec, ModelMismatch, WeightsUnavailable
from indexer.models.embedder import ImageEmbedder, embed_texts
from indexer.models.loading import (
    DEFAULT_MODEL,
    ModelSpec,
    list_architectures,
    load_model,
    resolve_precision,
)
from indexer.pipeline import IndexOptions, run_index
from indexer.store.catalog import Catalog
from indexer.store.index_dir import model_record


def test_spec_forms(tmp_path):
    checkpoint = tmp_path / "mine.pt"
    checkpoint.write_bytes(b"x")
    assert ModelSpec.parse(DEFAULT_MODEL) == ModelSpec("tag", "ViT-B-32", "laion2b_s34b_b79k")
    assert ModelSpec.parse(f"ViT-B-32-256:{checkpoint}") == ModelSpec(
        "file", "ViT-B-32-256", str(checkpoint)
    )
    assert ModelSpec.parse(f"local-dir:{tmp_path}") == ModelSpec("local-dir", str(tmp_path))
    assert ModelSpec.parse(str(tmp_path)).kind == "local-dir"
    assert ModelSpec.parse("hf-hub:org/name") == ModelSpec("hf-hub", "org/name")
    for bad in ("", "ViT-B-32", "ViT-B-32:"):
        with pytest.raises(BadModelSpec):
            ModelSpec.parse(bad)


def test_config_is_read_without_open_clip():
    assert ModelSpec.parse("ViT-B-32-256:x.pt").config()["vision_cfg"]["image_size"] == 256
    assert ModelSpec.parse("photoseek-tiny:x.pt").config()["embed_dim"] == 64
    assert "photoseek-tiny" in list_architectures()


def test_checkpoint_reloads_to_the_same_embeddings(tiny_checkpoint, tmp_path):
    a = load_model(ModelSpec.parse(tiny_checkpoint), "fp32")
    b = load_model(ModelSpec.parse(tiny_checkpoint), "fp32")
    pixels = np.random.default_rng(0).integers(0, 256, (3, 64, 64, 3), dtype=np.uint8)
    assert np.allclose(ImageEmbedder(a)(pixels), ImageEmbedder(b)(pixels), atol=1e-6)
    texts = ["a dog on a beach", "a red car"]
    assert np.allclose(embed_texts(a, texts), embed_texts(b, texts), atol=1e-6)
    assert (a.dim, a.image_size) == (64, 64)


def test_local_dir_model(tiny_checkpoint, tmp_path):
    """The folder layout `train` writes (open_clip's local-dir) loads, by prefix or bare path."""
    import torch
    from safetensors.torch import save_file

    from indexer.locations import data_dir

    state = torch.load(tiny_checkpoint.split(":", 1)[1], weights_only=True)
    folder = tmp_path / "model"
    folder.mkdir()
    save_file({k: v.contiguous() for k, v in state.items()}, folder / "open_clip_model.safetensors")
    config = json.loads((data_dir() / "model_configs" / "photoseek-tiny.json").read_text())
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": config}))
    from_dir = load_model(ModelSpec.parse(str(folder)), "fp32")
    from_file = load_model(ModelSpec.parse(tiny_checkpoint), "fp32")
    texts = ["a photo of a cat"]
    assert np.allclose(embed_texts(from_dir, texts), embed_texts(from_file, texts), atol=1e-6)
    assert ModelSpec.parse(f"local-dir:{folder}").identity().weights.startswith("sha256:")


def test_image_tower_alone_embeds_as_the_full_model(tiny_checkpoint, tmp_path):
    """`towers="image"` (what indexing loads) gives the same image embeddings, from a .pt, a
    DataParallel-style checkpoint and a model folder, without materialising the text tower."""
    import torch
    from safetensors.torch import save_file

    from indexer.locations import data_dir

    state = torch.load(tiny_checkpoint.split(":", 1)[1], weights_only=True)
    wrapped = tmp_path / "wrapped.pt"
    torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}}, wrapped)
    folder = tmp_path / "model"
    folder.mkdir()
    save_file({k: v.contiguous() for k, v in state.items()}, folder / "open_clip_model.safetensors")
    config = json.loads((data_dir() / "model_configs" / "photoseek-tiny.json").read_text())
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": config}))

    pixels = np.random.default_rng(2).integers(0, 256, (4, 64, 64, 3), dtype=np.uint8)
    full = load_model(ModelSpec.parse(tiny_checkpoint), "fp32")
    expected = ImageEmbedder(full)(pixels)
    assert full.has_text_tower
    for model in (tiny_checkpoint, f"photoseek-tiny:{wrapped}", str(folder)):
        alone = load_model(ModelSpec.parse(model), "fp32", towers="image")
        assert not alone.has_text_tower
        assert alone.model.token_embedding.weight.is_meta  # never read from the file
        assert np.allclose(ImageEmbedder(alone)(pixels), expected, atol=1e-6)
    with pytest.raises(BadModelSpec):
        load_model(ModelSpec.parse(tiny_checkpoint), "fp32", towers="text")


def test_cast_image_tower_is_cached_and_mapped_as_is(tiny_checkpoint):
    """A bf16 image tower is cast once, cached per user, and later loads map the cache: the
    same embeddings either way, with no fp32 copy in between."""
    import torch

    from indexer.locations import cache_dir

    pixels = np.random.default_rng(3).integers(0, 256, (4, 64, 64, 3), dtype=np.uint8)
    spec = ModelSpec.parse(tiny_checkpoint)
    shutil.rmtree(cache_dir() / "image-towers", ignore_errors=True)
    first = load_model(spec, "bf16", towers="image")
    cached = list((cache_dir() / "image-towers").glob("*.pt"))
    assert len(cached) == 1
    second = load_model(spec, "bf16", towers="image")
    assert second.model.visual.conv1.weight.dtype == torch.bfloat16
    assert np.array_equal(ImageEmbedder(first)(pixels), ImageEmbedder(second)(pixels))
    assert not list((cache_dir() / "image-towers").glob("*.tmp"))
    state = torch.load(cached[0], weights_only=True)
    torch.save({k: v * 0.5 if v.is_floating_point() else v for k, v in state.items()}, cached[0])
    third = load_model(spec, "bf16", towers="image")  # reads the (altered) cache
    assert not np.allclose(ImageEmbedder(third)(pixels), ImageEmbedder(first)(pixels), atol=1e-3)
    cached[0].unlink()


def test_missing_and_offline_weights_fail_fast_with_a_hint(tmp_path):
    started = time.monotonic()
    with pytest.raises(WeightsUnavailable, match="local checkpoint"):
        load_model(ModelSpec.parse(DEFAULT_MODEL), "fp32")  # HF_HUB_OFFLINE=1 from conftest
    assert time.monotonic() - started < 30
    with pytest.raises(WeightsUnavailable, match="no such file"):
        load_model(ModelSpec.parse(f"photoseek-tiny:{tmp_path / 'gone.pt'}"), "fp32")
    with pytest.raises(BadModelSpec, match="unknown architecture"):
        load_model(ModelSpec.parse(f"NoSuchNet:{tmp_path / 'x.pt'}"), "fp32")
    with pytest.raises(BadModelSpec, match="no pretrained tag"):
        load_model(ModelSpec.parse("ViT-B-32:nosuchtag"), "fp32")
    with pytest.raises(WeightsUnavailable):
        load_model(ModelSpec.parse(str(tmp_path)), "fp32")  # a folder without a model


def test_corrupt_checkpoint_is_a_clear_error(tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"this is not a checkpoint")
    with pytest.raises(WeightsUnavailable, match="cannot load weights"):
        load_model(ModelSpec.parse(f"photoseek-tiny:{bad}"), "fp32")


def test_identity_follows_the_checkpoint_bytes(tiny_checkpoint, tmp_path):
    copy = tmp_path / "copy.pt"
    shutil.copy(tiny_checkpoint.split(":", 1)[1], copy)
    original = ModelSpec.parse(tiny_checkpoint).identity()
    same = ModelSpec.parse(f"photoseek-tiny:{copy}").identity()
    assert original.same_model(same)  # moved checkpoint: same model
    with open(copy, "ab") as f:
        f.write(b"\0")
    assert not original.same_model(ModelSpec.parse(f"photoseek-tiny:{copy}").identity())


def test_identity_sees_a_change_in_the_middle_of_the_checkpoint(tiny_checkpoint, tmp_path):
    """A checkpoint changed only far from both ends (fine-tuned middle layers) is another
    model, however alike its first and last megabytes: the image-tower and ONNX caches key on
    this identity too."""
    source = Path(tiny_checkpoint.split(":", 1)[1])
    data = bytearray(source.read_bytes())
    assert len(data) > 8 << 20
    data[len(data) // 2] ^= 0xFF
    changed = tmp_path / "changed.pt"
    changed.write_bytes(data)
    original = ModelSpec.parse(tiny_checkpoint).identity()
    other = ModelSpec.parse(f"{TINY}:{changed}").identity()
    assert not original.same_model(other) and original.weights != other.weights


def sampled_as_recorded(path: Path) -> str:
    """The checkpoint fingerprint that versions before the SHA-256 recorded, computed the way
    they did: BLAKE2b-96 of the size, the first 4 MiB and (past 8 MiB) the last 4 MiB."""
    data, span = path.read_bytes(), 4 << 20
    digest = hashlib.blake2b(str(len(data)).encode(), digest_size=12)
    digest.update(data[:span])
    if len(data) > 2 * span:
        digest.update(data[-span:])
    return "file:" + digest.hexdigest()


def test_index_recording_the_sampled_fingerprint_keeps_its_model(tiny_checkpoint, tmp_path):
    """An index written by an earlier version records its checkpoint by a sample of its bytes:
    the same checkpoint is still its model (for index and search), a changed one is not."""
    photos, index = tmp_path / "photos", tmp_path / "index"
    photos.mkdir()
    write_image(photos / "a.jpg", seed=1)
    run_index(index, IndexOptions(roots=(photos,), model=tiny_checkpoint))
    checkpoint = Path(tiny_checkpoint.split(":", 1)[1])
    assert checkpoint.stat().st_size > 8 << 20  # the sample leaves out the middle
    catalog = Catalog.open(index)
    record = model_record(catalog)
    assert record is not None and record.identity.weights.startswith("sha256:")
    old = replace(
        record, identity=replace(record.identity, weights=sampled_as_recorded(checkpoint))
    )
    catalog.set_meta("model", old.to_json())
    catalog.close()

    write_image(photos / "b.jpg", seed=2)
    summary = run_index(index, IndexOptions(roots=(photos,), model=tiny_checkpoint))
    assert summary.added == 1
    found = run("search", "a photo", "--index", str(index), "--model", tiny_checkpoint, "--json")
    assert found.returncode == 0, found.stderr
    assert len(json.loads(found.stdout)) == 2
    changed = tmp_path / "changed.pt"
    changed.write_bytes(checkpoint.read_bytes() + b"\0")
    with pytest.raises(ModelMismatch):
        run_index(index, IndexOptions(roots=(photos,), model=f"{TINY}:{changed}"))


def test_precision_choice():
    assert resolve_precision("auto", "cuda:0") == "fp16"
    assert resolve_precision("fp32", "cpu") == "fp32"
    cpu_auto = resolve_precision("auto", "cpu")
    flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    assert cpu_auto == ("bf16" if "avx512_bf16" in flags or "amx_bf16" in flags else "fp32")
    with pytest.raises(BadModelSpec):
        resolve_precision("int3", "cpu")


def test_bf16_agrees_with_fp32(tiny_checkpoint):
    fp32 = load_model(ModelSpec.parse(tiny_checkpoint), "fp32")
    bf16 = load_model(ModelSpec.parse(tiny_checkpoint), "bf16")
    pixels = np.random.default_rng(1).integers(0, 256, (8, 64, 64, 3), dtype=np.uint8)
    a, b = ImageEmbedder(fp32)(pixels), ImageEmbedder(bf16)(pixels)
    assert np.min(np.sum(a * b, axis=1)) >= 0.999
