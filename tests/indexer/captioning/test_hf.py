"""transformers captioners: photoseek's captions equal the model's own `generate` on the same
processed inputs, batched or not; a missing extra is one line."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from helpers import assert_one_line_error, run, write_image
from indexer.captioning import Generation, load_captioner

pytest.importorskip("transformers")
LENGTH = 10


@pytest.fixture(scope="module")
def images() -> list[Image.Image]:
    rng = np.random.default_rng(11)
    return [Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)) for _ in range(3)]


def _direct(folder: Path, images: list[Image.Image], **options) -> list[str]:  # noqa: ANN003
    """The checkpoint's own processor and generate, called the plain way."""
    import torch
    import transformers

    processor = transformers.AutoProcessor.from_pretrained(folder)
    cls = "GitForCausalLM" if "git" in folder.name else "BlipForConditionalGeneration"
    model = getattr(transformers, cls).from_pretrained(folder).eval()
    pixel_values = processor(images=images, return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        out = model.generate(pixel_values=pixel_values, max_length=LENGTH, **options)
    return [t.strip() for t in processor.batch_decode(out, skip_special_tokens=True)]


@pytest.mark.parametrize("kind", ["blip", "git"])
def test_captions_equal_generate_called_directly(kind, blip_captioner, git_captioner, images):
    folder = blip_captioner if kind == "blip" else git_captioner
    greedy = load_captioner(str(folder), Generation(max_tokens=LENGTH), "cpu", "fp32")
    captions = greedy.caption(images)
    assert captions == _direct(folder, images, do_sample=False, num_beams=1)
    assert len(set(captions)) > 1  # the images are told apart
    assert captions == [greedy.caption([image])[0] for image in images]
    beams = load_captioner(
        str(folder), Generation("beam", max_tokens=LENGTH, beams=3), "cpu", "fp32"
    )
    assert beams.caption(images) == _direct(folder, images, do_sample=False, num_beams=3)
    assert greedy.fingerprint != beams.fingerprint
    expected = "BlipForConditionalGeneration" if kind == "blip" else "GitForCausalLM"
    assert expected in greedy.describe_spec()


def test_sampling_is_seeded_and_leaves_torch_alone(git_captioner, images):
    import torch

    sampled = load_captioner(
        str(git_captioner), Generation("top_k", top_k=5, max_tokens=LENGTH), "cpu", "fp32"
    )
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    first = sampled.caption(images)
    assert torch.rand(1) == before  # the global generator is as the caller left it
    assert sampled.caption(images) == first


def test_the_processor_size_is_the_decoder_size(blip_captioner, git_captioner):
    blip = load_captioner(str(blip_captioner), device="cpu")
    git = load_captioner(str(git_captioner), device="cpu")
    assert (blip.image_input.size, blip.image_input.resize_mode) == (32, "squash")
    assert (git.image_input.size, git.image_input.resize_mode) == (32, "shortest")


def test_without_the_extra_an_hf_captioner_is_one_line(git_captioner, tmp_path):
    blocked = tmp_path / "blocked"
    blocked.mkdir()
    (blocked / "transformers.py").write_text("raise ImportError('no transformers here')\n")
    image = tmp_path / "p.png"
    write_image(image, seed=1)
    result = run(
        "describe", str(image), "--caption", "--captioner", str(git_captioner),
        env={"PYTHONPATH": str(blocked)},
    )  # fmt: skip
    assert_one_line_error(result, "transformers captioners need transformers: pip install")


def test_a_hub_captioner_loads_from_the_cache_offline(git_captioner, tmp_path):
    """`hf:ORG/NAME` from the Hugging Face cache with HF_HUB_OFFLINE (set for every test),
    laid out as the hub client writes it; one not there is one line."""
    revision = "0" * 40
    repo = Path(os.environ["HF_HOME"]) / "hub" / "models--photoseek--tiny-git"
    snapshot = repo / "snapshots" / revision
    shutil.copytree(git_captioner, snapshot)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(revision)
    image = tmp_path / "p.png"
    write_image(image, seed=2, size=(32, 32))
    args = ("describe", str(image), "--captioner")
    result = run(*args, "hf:photoseek/tiny-git", "--json")
    assert result.returncode == 0, result.stderr
    expected = load_captioner(str(git_captioner), device="cpu").caption([Image.open(image)])
    assert json.loads(result.stdout) == {
        "caption": expected[0],
        "captioner": "hf:photoseek/tiny-git",
    }
    missing = run(*args, "hf:photoseek/not-cached")
    assert_one_line_error(missing, "--captioner hf:photoseek/not-cached: not in the Hugging Face")
