"""CoCa captions through photoseek's decode loop, checked against open_clip's own forward."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from indexer.captioning import Generation, load_captioner

LENGTH = 6  # tokens a caption may have, start token included: enough to differ, quick on a CPU


@pytest.fixture(scope="module")
def images() -> list[Image.Image]:
    """Two distinct noise pictures already at the CoCa's 32 px input size."""
    rng = np.random.default_rng(7)
    return [Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)) for _ in range(2)]


@pytest.fixture(scope="module")
def greedy(coca_folder, images) -> list[str]:
    return _captioner(coca_folder).caption(images)


def _captioner(folder: Path, **settings):  # noqa: ANN202
    generation = Generation(**{"max_tokens": LENGTH, **settings})
    return load_captioner(str(folder), generation, device="cpu", precision="fp32")


def _reference(folder: Path, image: Image.Image, length: int) -> str:
    """Greedy decoding the plain way: open_clip's own model and preprocess, the full forward
    (image included) on the growing sequence, the argmax of the last position each step."""
    import open_clip
    import torch

    model, preprocess = open_clip.create_model_from_pretrained(f"local-dir:{folder}")
    tokenizer = open_clip.get_tokenizer(f"local-dir:{folder}")
    start, end = tokenizer.sot_token_id, tokenizer.eot_token_id
    model.eval()
    pixels = preprocess(image)[None]
    tokens = [start]
    with torch.no_grad():
        while len(tokens) < length:
            logits = model(pixels, torch.tensor([tokens]), output_labels=False)["logits"]
            tokens.append(int(logits[0, -1].argmax()))
            if tokens[-1] == end:
                break
    caption = [t for t in tokens[1:] if t != end]
    return tokenizer.decode(caption).strip()


def test_greedy_equals_the_plain_reference(coca_folder, images, greedy):
    assert greedy == [_reference(coca_folder, image, LENGTH) for image in images]
    assert len(set(greedy)) == len(images)  # the images are told apart


def test_batched_equals_one_by_one_and_repeats(coca_folder, images, greedy):
    captioner = _captioner(coca_folder)
    assert greedy == [captioner.caption([image])[0] for image in images]
    assert captioner.caption([]) == []


def test_modes_that_reduce_to_greedy(coca_folder, images, greedy):
    assert _captioner(coca_folder, mode="beam", beams=1).caption(images) == greedy
    assert _captioner(coca_folder, mode="top_k", top_k=1).caption(images) == greedy
    # top_p this small keeps only the most likely token
    assert _captioner(coca_folder, mode="top_p", top_p=1e-6).caption(images) == greedy


def test_sampling_and_beams(coca_folder, images, greedy):
    sampled = _captioner(coca_folder, mode="top_k", top_k=50, seed=3)
    first = sampled.caption(images)
    assert first == sampled.caption(images)  # seeded: the same batch, the same captions
    assert first != greedy
    nucleus = _captioner(coca_folder, mode="top_p", top_p=0.9).caption(images)
    assert nucleus != greedy and all(nucleus)
    beams = _captioner(coca_folder, mode="beam", beams=3)
    found = beams.caption(images)
    assert found[1:] == beams.caption(images[1:]) and all(found)


def test_the_context_caps_the_length(coca_folder):
    long = _captioner(coca_folder, max_tokens=500)
    assert long.settings.max_tokens == 16  # the tiny text tower's context length


def test_fingerprint_names_weights_and_settings(coca_folder, tmp_path):
    from tiny_captioners import build_coca

    greedy = _captioner(coca_folder)
    assert greedy.fingerprint == _captioner(coca_folder).fingerprint
    assert greedy.fingerprint != _captioner(coca_folder, max_tokens=LENGTH + 1).fingerprint
    other = build_coca(tmp_path / "other", seed=1)
    assert greedy.fingerprint != _captioner(other).fingerprint
    assert greedy.image_input.size == 32
    assert "CoCa" in greedy.describe_spec()
