"""Models found in the Hugging Face cache: loaded without the network, as they were first made.

Each test writes a hub cache folder itself (huggingface_hub's layout: ``models--ORG--NAME/
snapshots/REV/...`` and ``refs/main``) and loads from it in a fresh interpreter, since
huggingface_hub reads where its cache is (and whether it is offline) once, at import.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from helpers import REPO, TINY
from indexer.errors import WeightsUnavailable
from indexer.locations import data_dir
from indexer.models.loading import ModelSpec, load_model

# A small architecture whose pretrained tag preprocesses unlike open_clip's defaults in all
# three ways that matter: mean/std 0.5, bilinear, and squash instead of shortest-side resize.
TAG_ARCH, TAG = "PE-Core-T-16-384", "meta"
REVISION = "0123456789abcdef0123456789abcdef01234567"
DEAD_ENDPOINT = "http://127.0.0.1:9"  # the discard port: nothing answers there


def hub_snapshot(cache: Path, repo: str) -> Path:
    """An empty snapshot folder of `repo` that the hub's cache lookup resolves through main."""
    folder = cache / f"models--{repo.replace('/', '--')}"
    (folder / "refs").mkdir(parents=True)
    (folder / "refs" / "main").write_text(REVISION)
    snapshot = folder / "snapshots" / REVISION
    snapshot.mkdir(parents=True)
    return snapshot


def load_in_fresh_process(script: str, env: dict[str, str], *args: str) -> dict:
    """Run `script` (which prints one JSON line last) with `env` added; its parsed output."""
    done = subprocess.run(
        [sys.executable, "-c", script, *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, **env},
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


TAG_SCRIPT = f"""
import json
from indexer.models.loading import ModelSpec, load_model

out = {{}}
for towers in ("both", "image"):
    loaded = load_model(ModelSpec.parse("{TAG_ARCH}:{TAG}"), "fp32", "cpu", towers=towers)
    out[towers] = {{**loaded.model.visual.preprocess_cfg,
                   "loaded_mean": loaded.mean, "loaded_std": loaded.std}}
print(json.dumps(out))
"""


def test_cached_tag_keeps_the_tags_own_preprocessing(tmp_path):
    """Once a tag's weights are in the cache, photoseek loads them from the file; it must still
    preprocess as the tag says (as open_clip does when it downloads them: the first run), or
    later runs embed differently from the first."""
    import open_clip
    import torch
    from safetensors.torch import save_file

    hub = open_clip.get_pretrained_cfg(TAG_ARCH, TAG)["hf_hub"].strip("/")
    snapshot = hub_snapshot(tmp_path / "hub", hub)
    model = open_clip.create_model(TAG_ARCH)  # random weights: only the preprocessing matters
    state = {k: v.to(torch.float16).contiguous() for k, v in model.state_dict().items()}
    save_file(state, snapshot / "open_clip_model.safetensors")
    del model, state

    got = load_in_fresh_process(TAG_SCRIPT, {"HF_HUB_CACHE": str(tmp_path / "hub")})
    tag = open_clip.get_pretrained_cfg(TAG_ARCH, TAG)
    wanted = {"mean": [0.5] * 3, "std": [0.5] * 3, "interpolation": "bilinear",
              "resize_mode": "squash"}  # fmt: skip
    assert json.loads(json.dumps({key: tag[key] for key in wanted})) == wanted  # not defaults
    for towers, cfg in got.items():
        assert cfg.pop("loaded_mean") == cfg["mean"] and cfg.pop("loaded_std") == cfg["std"]
        assert {key: cfg[key] for key in wanted} == wanted, towers


def tiny_hub_model(cache: Path, tiny_checkpoint: str, repo: str) -> None:
    """The tiny model as a hub repository in open_clip's layout, with its own mean/std."""
    import torch
    from safetensors.torch import save_file

    snapshot = hub_snapshot(cache, repo)
    state = torch.load(tiny_checkpoint.split(":", 1)[1], weights_only=True)
    save_file(
        {k: v.contiguous() for k, v in state.items()}, snapshot / "open_clip_model.safetensors"
    )
    config = json.loads((data_dir() / "model_configs" / f"{TINY}.json").read_text())
    preprocess = {"mean": [0.25, 0.5, 0.75], "std": [0.2, 0.3, 0.4]}
    (snapshot / "open_clip_config.json").write_text(
        json.dumps({"model_cfg": config, "preprocess_cfg": preprocess})
    )


HUB_SCRIPT = """
import json, sys
import numpy as np
from indexer.models.embedder import ImageEmbedder, embed_texts
from indexer.models.loading import ModelSpec, load_model

pixels = np.random.default_rng(0).integers(0, 256, (2, 64, 64, 3), dtype=np.uint8)
out = {}
for name in ("hub", "file"):
    model = sys.argv[1] if name == "hub" else sys.argv[2]
    loaded = load_model(ModelSpec.parse(model), "fp32", "cpu")
    out[name] = {"mean": loaded.mean, "text": embed_texts(loaded, ["a red car"]).tolist()}
print(json.dumps(out))
"""


def test_cached_hub_model_loads_with_no_hub_reachable(tmp_path, tiny_checkpoint):
    """A cached hf-hub model needs no connection: here the endpoint refuses every connection,
    and offline mode is not even set."""
    tiny_hub_model(tmp_path / "hub", tiny_checkpoint, "photoseek/tiny-hub")
    env = {"HF_HUB_CACHE": str(tmp_path / "hub"), "HF_HUB_OFFLINE": "0",
           "HF_ENDPOINT": DEAD_ENDPOINT}  # fmt: skip
    got = load_in_fresh_process(HUB_SCRIPT, env, "hf-hub:photoseek/tiny-hub", tiny_checkpoint)
    assert got["hub"]["mean"] == [0.25, 0.5, 0.75]  # the repository's own preprocessing
    assert np.allclose(got["hub"]["text"], got["file"]["text"], atol=1e-6)  # the same weights


def test_hub_model_not_cached_fails_fast_offline_in_one_line():
    started = time.monotonic()
    with pytest.raises(WeightsUnavailable, match="offline and not in the local cache") as caught:
        load_model(ModelSpec.parse("hf-hub:photoseek/never-downloaded"), "fp32", "cpu")
    assert time.monotonic() - started < 10
    assert "\n" not in str(caught.value)
