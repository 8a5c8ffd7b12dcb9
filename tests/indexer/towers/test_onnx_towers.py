"""Exported ONNX towers, run without torch, must embed like the open_clip model they came from."""

from __future__ import annotations

import copy
import io
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import open_clip
import pytest
import torch
from open_clip.tokenizer import default_bpe
from PIL import Image, ImageDraw

from helpers import assert_runs_without_torch
from indexer.errors import BadInput, BadModelSpec, IndexNotFound
from indexer.locations import data_dir
from indexer.media.decode import decode, model_input, to_rgb
from indexer.towers.export import export_towers
from indexer.towers.spec import TOWERS_FILE, ImagePreprocess, TowersSpec
from search.encoders.towers import ImageEncoder, TextEncoder

TEXTS = [
    "a photo of a dog on the beach",
    "",
    "Sunset over Wellington harbour, 2019 🌅",
    "&quot;red car&quot; parked near a café",
    "a very long caption that keeps going " * 12,
]


@pytest.fixture(scope="session")
def tiny_config() -> str:
    """The name of the tiny test architecture, registered with open_clip."""
    open_clip.add_model_config(data_dir() / "model_configs" / "photoseek-tiny.json")
    return "photoseek-tiny"


@pytest.fixture(scope="session")
def tiny_model(tiny_config: str) -> tuple[torch.nn.Module, Callable[[Image.Image], torch.Tensor]]:
    """The random-weight tiny CLIP model and its eval transform, built once."""
    torch.manual_seed(0)
    model, _, preprocess = open_clip.create_model_and_transforms(tiny_config, pretrained=None)
    return model.eval(), preprocess


@pytest.fixture(scope="session")
def towers(tiny_model, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model's towers, exported once."""
    model, _ = tiny_model
    return export_towers(model, tmp_path_factory.mktemp("towers"))


def make_images() -> list[Image.Image]:
    """Drawn test images: varied sizes, aspect ratios, modes, including smaller than the tower.

    Per-pixel noise is the hardest case for resampling: any difference in where the resized
    image samples shows up in it, where a photo's smooth areas would hide it.
    """
    rng = np.random.default_rng(0)
    images = []
    sizes = [
        (64, 64),
        (200, 120),
        (37, 301),
        (640, 480),
        (30, 20),
        (65, 63),
        (1000, 999),
        (97, 3000),
        (2000, 1500),
    ]
    for i, (width, height) in enumerate(sizes):
        noise = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
        image = Image.fromarray(noise)
        draw = ImageDraw.Draw(image)
        draw.ellipse((width // 4, height // 4, width * 3 // 4, height * 3 // 4), fill=(200, 30, i))
        draw.rectangle((0, 0, width // 3, height // 5), fill=(10, 180, 90))
        images.append(image)
    images.append(images[1].convert("L"))
    turned = images[2].transpose(Image.Transpose.ROTATE_90).convert("RGBA")
    turned.putalpha(Image.linear_gradient("L").resize(turned.size))
    images.append(turned)
    images.append(images[1].convert("P"))
    return images


def normalise(pixels: np.ndarray, cfg: ImagePreprocess) -> np.ndarray:
    """uint8 [S, S, 3] pixels as open_clip's ToTensor and Normalize make them: [3, S, S]."""
    mean, std = np.asarray(cfg.mean), np.asarray(cfg.std)
    return ((pixels / 255.0 - mean) / std).astype(np.float32).transpose(2, 0, 1)


def encode_torch(model: torch.nn.Module, pixels: list[np.ndarray]) -> np.ndarray:
    """The torch image tower's embeddings of normalised [3, S, S] pixels."""
    with torch.no_grad():
        return model.encode_image(torch.from_numpy(np.stack(pixels))).numpy()


def encoded_file(image: Image.Image, fmt: str, size: int) -> tuple[bytes, np.ndarray]:
    """The image saved as fmt, and the indexer's model input decoded from those bytes."""
    buffer = io.BytesIO()
    image.save(buffer, fmt)
    data = buffer.getvalue()
    return data, decode(data, fmt.lower(), size).pixels


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return a @ b.T


def export_files(spec: dict) -> list[str]:
    """Every file one export should leave: nothing temporary, nothing from older exports."""
    text, image = spec["text_file"], spec["image_file"]
    return [TOWERS_FILE, spec["vocab_file"], text, f"{text}.data", image, f"{image}.data"]


def test_export_writes_a_complete_folder(towers: Path) -> None:
    spec = json.loads((towers / TOWERS_FILE).read_text())
    assert spec["context_length"] == 77
    assert spec["embed_dim"] == 64
    assert spec["image"]["size"] == 64
    assert spec["image"]["resize_mode"] == "shortest"
    assert spec["image"]["interpolation"] == "bicubic"
    assert spec["image"]["mean"] == pytest.approx(open_clip.OPENAI_DATASET_MEAN)
    assert (towers / spec["vocab_file"]).read_bytes() == Path(default_bpe()).read_bytes()
    assert sorted(p.name for p in towers.iterdir()) == sorted(export_files(spec))


def test_reexport_replaces_the_old_towers(tiny_model, tmp_path: Path) -> None:
    model, _ = tiny_model
    export_towers(model, tmp_path)
    first = json.loads((tmp_path / TOWERS_FILE).read_text())
    export_towers(model, tmp_path)
    second = json.loads((tmp_path / TOWERS_FILE).read_text())
    assert second["text_file"] != first["text_file"]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(export_files(second))
    assert TextEncoder(tmp_path).encode(["a dog"]).shape == (1, 64)


def test_text_tower_matches_torch(tiny_model, towers: Path) -> None:
    model, _ = tiny_model
    ours = TextEncoder(towers).encode(TEXTS)
    with torch.no_grad():
        theirs = model.encode_text(open_clip.tokenize(TEXTS)).numpy()
    assert ours.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, rtol=1e-5)
    assert np.diag(cosines(ours, theirs)).min() >= 0.999


def test_batch_axis_is_dynamic(towers: Path) -> None:
    encoder = TextEncoder(towers, batch_size=3)
    together = encoder.encode(TEXTS)
    alone = np.concatenate([encoder.encode([t]) for t in TEXTS])
    np.testing.assert_allclose(together, alone, atol=1e-5)
    assert encoder.encode([]).shape == (0, 64)


def test_model_input_matches_open_clip(tiny_model, towers: Path) -> None:
    """The indexer's pixels, normalised, are what open_clip's eval transform makes.

    open_clip gets the same RGB picture: it converts to RGB after resizing, so it would drop
    alpha and resize palette images by nearest neighbour (Pillow's rule for mode P), where
    the indexer deliberately composites alpha over white and resizes RGB (see test_decode).
    Pillow's reducing_gap, which box-reduces an image before the bicubic pass when shrinking
    it 6x or more, is the one difference left: on this noise it moves pixels by at most ~0.01
    on average (normalised units). A crop one pixel off moves them by 0.05-0.7, and bilinear
    resampling by 0.03-0.12 wherever the shrink is under 6x.
    """
    model, preprocess = tiny_model
    cfg = TowersSpec.read(towers).image
    ours, theirs = [], []
    for image in make_images():
        rgb = to_rgb(image)
        ours.append(normalise(model_input(rgb, cfg.size), cfg))
        theirs.append(preprocess(rgb).numpy())
        difference = np.abs(ours[-1] - theirs[-1]).mean()
        assert difference < 0.02, f"{image.size} {image.mode}: mean difference {difference}"
    similarity = cosines(encode_torch(model, ours), encode_torch(model, theirs))
    assert np.diag(similarity).min() >= 0.999


def test_image_tower_matches_torch(tiny_model, towers: Path) -> None:
    """Decoded lossless files, embedded without torch, land where open_clip puts the images."""
    model, preprocess = tiny_model
    images = make_images()
    encoder = ImageEncoder(towers, batch_size=5)  # 12 images: the last batch is a short one
    assert encoder.image_size == 64
    pixels = np.stack([encoded_file(image, "PNG", encoder.image_size)[1] for image in images])
    ours = encoder.encode(pixels)
    theirs = encode_torch(model, [preprocess(to_rgb(image)).numpy() for image in images])
    assert ours.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, rtol=1e-5)
    similarity = cosines(ours, theirs)
    assert np.diag(similarity).min() >= 0.999
    # Random weights make all images look alike (cosine ~0.98), so also ask that each image is
    # nearest its own torch embedding: a preprocessing slip would break that.
    np.testing.assert_array_equal(similarity.argmax(axis=1), np.arange(len(images)))


def test_jpeg_query_matches_torch(tiny_model, towers: Path) -> None:
    """JPEGs decode in draft mode, so compare with open_clip given the full decode, loosely.

    Draft mode lets the JPEG decoder scale the image down by 1/2 to 1/8 (averaging within
    DCT blocks) before the bicubic resize, which moves pixels by up to ~0.02 on average on
    this noise; embeddings stay within 0.0002 of cosine 1, so 0.998 leaves room, while a
    crop one pixel off (cosine down to 0.994 on these images) still fails.
    """
    model, preprocess = tiny_model
    images = [image for image in make_images() if image.mode == "RGB"]
    encoder = ImageEncoder(towers)
    files = [encoded_file(image, "JPEG", encoder.image_size) for image in images]
    ours = encoder.encode(np.stack([pixels for _, pixels in files]))
    full = [Image.open(io.BytesIO(data)).convert("RGB") for data, _ in files]
    theirs = encode_torch(model, [preprocess(image).numpy() for image in full])
    similarity = cosines(ours, theirs)
    assert np.diag(similarity).min() >= 0.998
    np.testing.assert_array_equal(similarity.argmax(axis=1), np.arange(len(images)))


def test_image_encoder_takes_decoded_pixels_only(towers: Path) -> None:
    encoder = ImageEncoder(towers)
    assert encoder.encode(np.zeros((0, 64, 64, 3), np.uint8)).shape == (0, 64)
    for wrong in (
        np.zeros((64, 64, 3), np.uint8),
        np.zeros((1, 32, 32, 3), np.uint8),
        np.zeros((1, 3, 64, 64), np.uint8),
        np.zeros((1, 64, 64, 3), np.float32),
    ):
        with pytest.raises(BadInput):
            encoder.encode(wrong)


@pytest.mark.parametrize(
    "change",
    [
        {"resize_mode": "longest"},
        {"size": (48, 80)},
    ],
)
def test_export_refuses_transforms_the_indexer_lacks(tiny_model, change, tmp_path: Path) -> None:
    model = copy.deepcopy(tiny_model[0])
    open_clip.set_model_preprocess_cfg(
        model, {**open_clip.get_model_preprocess_cfg(model), **change}
    )
    with pytest.raises(BadModelSpec, match="only implements"):
        export_towers(model, tmp_path / "towers")
    assert not (tmp_path / "towers").exists()


def test_export_leaves_the_model_alone(tiny_config: str, tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = open_clip.create_model(tiny_config, pretrained=None).to(torch.bfloat16).train()
    export_towers(model, tmp_path)
    assert model.training
    assert next(model.parameters()).dtype == torch.bfloat16
    assert TextEncoder(tmp_path).encode(["a dog"]).shape == (1, 64)


def test_missing_export_is_a_typed_error(tmp_path: Path) -> None:
    with pytest.raises(IndexNotFound):
        TextEncoder(tmp_path)


def test_query_path_never_imports_torch(towers: Path) -> None:
    assert_runs_without_torch(
        "import numpy, indexer.media.decode, search.encoders.tokenizer, search.encoders.towers\n"
        f"search.encoders.towers.TextEncoder({str(towers)!r}).encode(['a dog'])\n"
        f"search.encoders.towers.ImageEncoder({str(towers)!r}).encode(\n"
        "    numpy.zeros((1, 64, 64, 3), numpy.uint8)\n"
        ")\n"
    )


def test_text_tower_runs_only_as_long_as_the_longest_text(towers: Path, tiny_model) -> None:
    """CLIP's causal text tower is exported trimmable: a short query skips the padding, and
    a short and a 77-token text in one batch still match torch."""
    model, _ = tiny_model
    assert TowersSpec.read(towers).text_trimmed
    texts = ["a cat", "word " * 100]
    with torch.no_grad():
        expected = model.encode_text(open_clip.tokenize(texts), normalize=True).numpy()
    got = TextEncoder(towers).encode(texts)
    assert np.min(np.sum(got * expected, axis=1)) >= 0.999


@pytest.mark.parametrize("field", ["text_file", "image_file", "vocab_file", "head_file"])
@pytest.mark.parametrize("name", ["../outside.onnx", "/etc/passwd", "sub/t.onnx", "..", ""])
def test_towers_json_names_only_plain_files_in_its_folder(
    towers: Path, tmp_path: Path, field: str, name: str
) -> None:
    """An index folder is portable, so its towers.json is untrusted: a name that leaves the
    folder (or names a folder) is refused in one line before any file is opened."""
    raw = json.loads((towers / TOWERS_FILE).read_text())
    if field == "head_file":
        raw["rerank"] = {"head_file": name, "alpha": 1.0, "logit_scale": 30.0,
                         "platt": [1.0, 0.0], "stored_tokens": 4, "store_dim": 8}  # fmt: skip
    else:
        raw[field] = name
    (tmp_path / TOWERS_FILE).write_text(json.dumps(raw))
    with pytest.raises(IndexNotFound, match=field) as caught:
        TowersSpec.read(tmp_path)
    assert "\n" not in str(caught.value)
