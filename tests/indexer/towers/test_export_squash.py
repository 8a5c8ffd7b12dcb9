"""Squash-resize models (open_clip ``resize_mode='squash'``: SigLIP, CLIPA, PE, DFN tags): photos
are squashed to the square as open_clip's own ``preprocess`` does, at index time (the decoder
and the torch embedder) and on the torch-free query path (the ONNX image tower)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import open_clip
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from helpers import TINY
from indexer.errors import BadModelSpec, IndexNotFound
from indexer.locations import data_dir
from indexer.media.decode import ImageInput, decode
from indexer.models.embedder import ImageEmbedder
from indexer.models.loading import ModelSpec, load_model, register_configs
from indexer.towers.export import export_towers
from indexer.towers.spec import TOWERS_FILE, TowersSpec
from search.encoders.towers import ImageEncoder

SIZE = 64  # the tiny config's image size
# Odd aspect ratios: a centre crop of these loses most of the picture, a squash keeps it all.
SHAPES = [(300, 90), (70, 260), (123, 77), (900, 310)]
PREPROCESS = {"resize_mode": "squash", "interpolation": "bilinear",
              "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]}  # fmt: skip


def _photo(width: int, height: int, seed: int, fmt: str) -> tuple[bytes, str]:
    """A photo whose left, middle and right thirds differ (so cropping them off shows), noisy
    enough to exercise the resampling; as file bytes and their extension."""
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 60, (height, width, 3)).astype(np.int16)
    for third, colour in enumerate(rng.integers(0, 196, (3, 3))):
        if width >= height:
            pixels[:, third * width // 3 : (third + 1) * width // 3] += colour
        else:
            pixels[third * height // 3 : (third + 1) * height // 3] += colour
    out = io.BytesIO()
    Image.fromarray(pixels.clip(0, 255).astype(np.uint8)).save(out, format=fmt, quality=95)
    return out.getvalue(), fmt.lower().replace("jpeg", "jpg")


PHOTOS = [_photo(w, h, seed, "PNG" if seed % 2 == 0 else "JPEG")
          for seed, (w, h) in enumerate(SHAPES)]  # fmt: skip


@pytest.fixture(scope="module")
def squash_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model folder of the tiny architecture whose config asks for squash and bilinear."""
    register_configs()
    torch.manual_seed(0)
    model = open_clip.create_model(TINY)
    folder = tmp_path_factory.mktemp("squash-model")
    save_file({k: v.contiguous() for k, v in model.state_dict().items()},
              folder / "open_clip_model.safetensors")  # fmt: skip
    config = json.loads((data_dir() / "model_configs" / f"{TINY}.json").read_text())
    (folder / "open_clip_config.json").write_text(
        json.dumps({"model_cfg": config, "preprocess_cfg": PREPROCESS})
    )
    return folder


@pytest.fixture(scope="module")
def open_clips_own(squash_folder: Path) -> tuple[torch.nn.Module, object]:
    """The folder's model and eval transform as open_clip itself builds them."""
    model, _, preprocess = open_clip.create_model_and_transforms(f"local-dir:{squash_folder}")
    return model.eval(), preprocess


def _open_clip_embeddings(open_clips_own: tuple[torch.nn.Module, object]) -> np.ndarray:
    model, preprocess = open_clips_own
    images = [Image.open(io.BytesIO(data)).convert("RGB") for data, _ in PHOTOS]
    with torch.no_grad():
        batch = torch.stack([preprocess(image) for image in images])  # type: ignore[operator]
        features = model.encode_image(batch, normalize=True)  # type: ignore[operator]
    return features.numpy()


def _decoded(resize: ImageInput | int) -> np.ndarray:
    return np.stack([decode(data, ext, resize).pixels for data, ext in PHOTOS])


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    return np.sum(a * (b / np.linalg.norm(b, axis=1, keepdims=True)), axis=1)


@pytest.mark.parametrize("interpolation", ["bicubic", "bilinear"])
def test_squashed_pixels_match_open_clips_transform(interpolation: str) -> None:
    theirs = open_clip.image_transform(
        SIZE, is_train=False, mean=(0.0,) * 3, std=(1.0,) * 3,
        resize_mode="squash", interpolation=interpolation,
    )  # fmt: skip
    for data, ext in PHOTOS:
        image = Image.open(io.BytesIO(data)).convert("RGB")
        want = theirs(image).permute(1, 2, 0).numpy() * 255.0
        ours = decode(data, ext, ImageInput(SIZE, "squash", interpolation)).pixels
        assert ours.shape == (SIZE, SIZE, 3)
        assert np.abs(ours - want).mean() < 1.0, (image.size, ext)  # 0 unless JPEG-drafted
        cropped = decode(data, ext, SIZE).pixels  # the crop sees another picture
        assert np.abs(cropped - want).mean() > 10, (image.size, ext)


def test_a_squash_models_resize_is_known_before_and_after_loading(squash_folder: Path) -> None:
    want = ImageInput(SIZE, "squash", "bilinear")
    spec = ModelSpec.parse(str(squash_folder))
    assert spec.image_input() == want
    assert load_model(spec, "fp32", "cpu", towers="image").image_input == want


def test_index_time_embeddings_match_open_clips_preprocess(squash_folder, open_clips_own) -> None:
    loaded = load_model(ModelSpec.parse(str(squash_folder)), "fp32", "cpu", towers="image")
    theirs = _open_clip_embeddings(open_clips_own)
    ours = ImageEmbedder(loaded)(_decoded(loaded.image_input))
    assert _cosines(ours, theirs).min() >= 0.999
    # Cropped as before, the same photos embed elsewhere: the parity above is the squash's.
    assert _cosines(ImageEmbedder(loaded)(_decoded(SIZE)), theirs).min() < 0.99


def test_onnx_query_path_squashes_like_open_clip(squash_folder, open_clips_own, tmp_path) -> None:
    loaded = load_model(ModelSpec.parse(str(squash_folder)), "fp32", "cpu")
    towers = export_towers(loaded.model, tmp_path / "towers", tokenizer=loaded.tokenizer)
    image = json.loads((towers / TOWERS_FILE).read_text())["image"]
    assert (image["resize_mode"], image["interpolation"]) == ("squash", "bilinear")
    encoder = ImageEncoder(towers)
    assert encoder.image_input == ImageInput(SIZE, "squash", "bilinear")
    ours = encoder.encode(_decoded(encoder.image_input))
    assert _cosines(ours, _open_clip_embeddings(open_clips_own)).min() >= 0.999


def test_unknown_resize_in_towers_json_is_one_line(tmp_path: Path, squash_folder: Path) -> None:
    loaded = load_model(ModelSpec.parse(str(squash_folder)), "fp32", "cpu")
    towers = export_towers(loaded.model, tmp_path / "towers", tokenizer=loaded.tokenizer)
    exported = (towers / TOWERS_FILE).read_text()
    for key, value in (("resize_mode", "longest"), ("interpolation", "lanczos")):
        raw = json.loads(exported)
        raw["image"][key] = value
        (towers / TOWERS_FILE).write_text(json.dumps(raw))
        with pytest.raises(IndexNotFound, match=f"image {key} '{value}' is not one of") as e:
            TowersSpec.read(towers)
        assert "\n" not in str(e.value)


def test_resizes_the_decoder_lacks_are_refused() -> None:
    for resize_mode, interpolation in (("longest", "bicubic"), ("squash", "nearest")):
        with pytest.raises(BadModelSpec, match="not supported"):
            ImageInput(SIZE, resize_mode, interpolation)


def test_a_squash_models_index_and_image_queries_match_open_clip(
    tmp_path: Path, squash_folder: Path, open_clips_own
) -> None:
    """End to end (needs the pipeline/engine patch): the index's vectors and an image query's
    vector are open_clip's own, squashed, not the crop's."""
    from indexer.pipeline import IndexOptions, run_index
    from indexer.store.catalog import Catalog
    from search.engine import Engine

    photos = tmp_path / "photos"
    photos.mkdir()
    for i, (data, ext) in enumerate(PHOTOS):
        (photos / f"odd {i}.{ext}").write_bytes(data)
    run_index(tmp_path / "idx", IndexOptions(roots=(photos,), model=str(squash_folder)))
    catalog = Catalog.open(tmp_path / "idx")
    rows = sorted(catalog.all_rows(status="ok"), key=lambda r: r.path)
    assert len(rows) == len(PHOTOS)
    theirs = _open_clip_embeddings(open_clips_own)
    stored = catalog.vectors(np.array([r.id for r in rows]), 64)
    assert _cosines(stored, theirs).min() >= 0.999
    with Engine.open(tmp_path / "idx") as engine:
        queried = engine.encode_images([bytes(r.path) for r in rows])
    assert _cosines(queried, theirs).min() >= 0.999
