"""Tiny random captioners saved as users save them, for offline tests: an open_clip CoCa in
open_clip's local-dir layout, and transformers BLIP and GIT captioners with their processors
(their tokenizer is the rerank tests' hand-written BERT vocabulary, from `tiny_hf`)."""

from __future__ import annotations

import json
import runpy
from pathlib import Path

from helpers import REPO

# vision ViT 64 wide / 2 layers, text and multimodal decoder 64 wide / 2 layers, 32 px input
COCA_CFG = {
    "embed_dim": 64,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "patch_size": 8, "head_width": 32,
                   "attentional_pool": True, "attn_pooler_heads": 2, "attn_pooler_queries": 16,
                   "output_tokens": True},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2,
                 "embed_cls": True, "output_tokens": True},
    "multimodal_cfg": {"context_length": 16, "vocab_size": 49408, "width": 64, "heads": 2,
                       "layers": 2, "attn_pooler_heads": 2},
    "custom_text": True,
}  # fmt: skip
GIT_SEED = 2  # one whose random weights do not end every caption at once
PREPROCESS = {"mean": [0.48, 0.46, 0.41], "std": [0.27, 0.26, 0.28]}


def build_itm(kind: str, folder: Path) -> Path:
    """The rerank tests' tiny transformers ITM checkpoint (their module is not a package)."""
    return runpy.run_path(str(REPO / "tests" / "search" / "rerank" / "tiny_hf.py"))["build"](
        kind, folder
    )


def _spread(model, seed: int = 0) -> None:  # noqa: ANN001 - any torch module
    """Widen the default init, which is so small every image gets the same caption."""
    import torch

    torch.manual_seed(seed)
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.dim() > 1:
                parameter.normal_(0.0, 0.3)


def build_coca(folder: Path, seed: int = 0) -> Path:
    """A tiny random CoCa in open_clip's local-dir layout (config + safetensors)."""
    import open_clip
    import torch
    from safetensors.torch import save_file

    torch.manual_seed(seed)
    model = open_clip.CoCa(**{k: v for k, v in COCA_CFG.items() if k != "custom_text"})
    _spread(model)
    if seed:  # another seed: other weights, for fingerprints
        with torch.no_grad():
            next(model.parameters()).add_(float(seed))
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(folder / "open_clip_model.safetensors"))
    config = {"model_cfg": COCA_CFG, "preprocess_cfg": PREPROCESS}
    (folder / "open_clip_config.json").write_text(json.dumps(config))
    return folder


def build_blip(folder: Path) -> Path:
    """A tiny random BlipForConditionalGeneration with the rerank tests' BLIP processor."""
    import transformers as t

    retrieval = build_itm("blip", folder.with_name(folder.name + "-itm"))
    model = t.BlipForConditionalGeneration(t.BlipConfig.from_pretrained(retrieval))
    _spread(model)
    model.save_pretrained(folder)
    t.BlipProcessor.from_pretrained(retrieval).save_pretrained(folder)
    return folder


def build_git(folder: Path, blip: Path) -> Path:
    """A tiny random GitForCausalLM (hidden 32, 2 layers) with the BLIP folder's tokenizer."""
    import transformers as t

    tokenizer = t.BertTokenizer.from_pretrained(blip)
    small = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
             "intermediate_size": 37}  # fmt: skip
    config = t.GitConfig(
        vision_config={**small, "image_size": 32, "patch_size": 8},
        **small, vocab_size=len(tokenizer), max_position_embeddings=64,
        bos_token_id=tokenizer.cls_token_id, eos_token_id=tokenizer.sep_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )  # fmt: skip
    model = t.GitForCausalLM(config)
    _spread(model, seed=GIT_SEED)
    model.save_pretrained(folder)
    images = t.CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    t.GitProcessor(images, tokenizer).save_pretrained(folder)
    return folder
