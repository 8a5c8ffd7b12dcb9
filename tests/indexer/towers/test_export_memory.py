"""A tower export holds a model's weights once: the model is loaded with its checkpoint
memory-mapped (not read into memory beside a randomly initialised copy), and the ONNX export
writes each weight from the module itself (not from the exporter's serialised copies of all
of them; only torch's tracer still clones the tower it traces). Measured as the peak RSS of a
real child process on a model of ~180 MB."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import REPO

WIDE = "photoseek-test-wide"
CONFIG = {
    "embed_dim": 512,
    "vision_cfg": {"image_size": 224, "layers": 4, "width": 512, "head_width": 64,
                   "patch_size": 32},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 512, "heads": 8,
                 "layers": 2},
}  # fmt: skip

_PRELUDE = """
import json, resource, sys
import open_clip, torch
from indexer.models.loading import ModelSpec, load_model, register_configs
from indexer.towers.export import export_towers

config, checkpoint, tiny, out = sys.argv[1:5]
name = config.rsplit("/", 1)[-1].removesuffix(".json")
register_configs()
open_clip.add_model_config(config)
warm = load_model(ModelSpec.parse(tiny), "fp32", "cpu")  # lazy imports and first-call caches

def peak():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

# mapped, so that counting them reads none of them into this process's peak
mapped = torch.load(checkpoint, mmap=True, weights_only=True)
weights = sum(t.numel() * t.element_size() for t in mapped.values())
del mapped
"""

_EXPORT = """
export_towers(warm.model, out + "/warm", tokenizer=warm.tokenizer, owned=True)
model = open_clip.create_model(name).eval()
before = peak()
export_towers(model, out + "/wide", tokenizer=open_clip.get_tokenizer(name), owned=True)
print(json.dumps({"weights": weights, "grown": peak() - before}))
"""

_LOAD = """
before = peak()
loaded = load_model(ModelSpec.parse(name + ":" + checkpoint), "fp32", "cpu")
grown = peak() - before
state = loaded.model.state_dict()
same = all(torch.equal(state[k], v) for k, v in torch.load(checkpoint).items())
print(json.dumps({"weights": weights, "grown": grown, "same": same}))
"""


@pytest.fixture(scope="module")
def wide(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A ~180 MB model's config and its checkpoint (seeded random weights)."""
    import open_clip
    import torch

    folder = tmp_path_factory.mktemp("wide")
    config = folder / f"{WIDE}.json"
    config.write_text(json.dumps(CONFIG))
    open_clip.add_model_config(config)
    torch.manual_seed(0)
    checkpoint = folder / "wide.pt"
    torch.save(open_clip.create_model(WIDE).state_dict(), checkpoint)
    return config, checkpoint


def _measure(script: str, wide: tuple[Path, Path], tiny: str, out: Path) -> dict:
    config, checkpoint = wide
    done = subprocess.run(
        [sys.executable, "-c", _PRELUDE + script, str(config), str(checkpoint), tiny, str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_the_onnx_export_holds_one_copy_of_a_tower_at_most(wide, tiny_checkpoint, tmp_path):
    # torch's tracer clones the traced tower's weights once (to check that tracing left them
    # unchanged); the exporter's serialisation held ~4x that tower's weights on top.
    got = _measure(_EXPORT, wide, tiny_checkpoint, tmp_path)
    assert got["grown"] < got["weights"], got


def test_loading_maps_the_checkpoint_instead_of_reading_it_beside_the_model(
    wide, tiny_checkpoint, tmp_path
):
    # open_clip's own load read the checkpoint into memory beside the model: 1x more at least.
    got = _measure(_LOAD, wide, tiny_checkpoint, tmp_path)
    assert got["same"], "the mapped load must give the checkpoint's tensors, unchanged"
    assert got["grown"] < 0.5 * got["weights"], got
