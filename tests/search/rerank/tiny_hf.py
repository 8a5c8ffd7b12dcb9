"""Tiny random transformers ITM checkpoints, saved with their processors, for offline tests."""

from __future__ import annotations

import json
from pathlib import Path

WORDS = "a an the red blue green small big circle square triangle dog cat on of and photo".split()
SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
KINDS = ("blip", "vilt", "bridgetower", "flava")


def _bert_tokenizer(folder: Path):  # noqa: ANN202
    from transformers import BertTokenizer

    vocab = folder / "vocab.txt"
    vocab.write_text("\n".join(SPECIALS + WORDS) + "\n")
    return BertTokenizer(str(vocab))


def _roberta_tokenizer(folder: Path):  # noqa: ANN202
    from transformers import RobertaTokenizer

    specials = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
    tokens = specials + [f"Ġ{w}" for w in WORDS] + WORDS + list("abcdefghijklmnopqrstuvwxyzĠ")
    vocab = {t: i for i, t in enumerate(dict.fromkeys(tokens))}
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    return RobertaTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"))


def build(kind: str, folder: Path) -> Path:
    """Write a seeded tiny `kind` checkpoint and its processor to `folder`."""
    import torch
    import transformers as t

    torch.manual_seed(0)
    folder.mkdir(parents=True, exist_ok=True)
    vocab = len(SPECIALS) + len(WORDS)
    text = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
            "intermediate_size": 37, "vocab_size": vocab}  # fmt: skip
    if kind == "blip":
        config = t.BlipConfig(
            text_config={**text, "encoder_hidden_size": 32, "sep_token_id": 3, "bos_token_id": 2},
            vision_config={"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
                           "intermediate_size": 37, "image_size": 32, "patch_size": 8},
        )  # fmt: skip
        model = t.BlipForImageTextRetrieval(config)
        images = t.BlipImageProcessor(size={"height": 32, "width": 32})
        processor = t.BlipProcessor(images, _bert_tokenizer(folder))
    elif kind == "vilt":
        config = t.ViltConfig(**text, image_size=32, patch_size=8, max_position_embeddings=40)
        model = t.ViltForImageAndTextRetrieval(config)
        images = t.ViltImageProcessor(size={"shortest_edge": 32}, size_divisor=8)
        processor = t.ViltProcessor(images, _bert_tokenizer(folder))
    elif kind == "bridgetower":
        config = t.BridgeTowerConfig(
            hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
            text_config={**text, "hidden_size": 64, "vocab_size": 80},
            vision_config={"hidden_size": 64, "num_hidden_layers": 2, "image_size": 32,
                           "patch_size": 8},
        )  # fmt: skip
        model = t.BridgeTowerForImageAndTextRetrieval(config)
        images = t.BridgeTowerImageProcessor(
            size={"shortest_edge": 32}, size_divisor=8, crop_size={"shortest_edge": 32}
        )
        processor = t.BridgeTowerProcessor(images, _roberta_tokenizer(folder))
    else:
        small = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
                 "intermediate_size": 37}  # fmt: skip
        config = t.FlavaConfig(
            text_config={**small, "vocab_size": vocab},
            image_config={**small, "image_size": 32, "patch_size": 8},
            multimodal_config=small,
            image_codebook_config={"hidden_size": 8, "num_groups": 1, "num_blocks_per_group": 1,
                                   "vocab_size": 16},
            hidden_size=32, projection_dim=32,
        )  # fmt: skip
        model = t.FlavaForPreTraining(config)
        images = t.FlavaImageProcessor(size={"height": 32, "width": 32},
                                       crop_size={"height": 32, "width": 32})  # fmt: skip
        processor = t.FlavaProcessor(images, _bert_tokenizer(folder))
    with torch.no_grad():  # the default init is so small the images barely move the logits
        for parameter in model.parameters():
            if parameter.dim() > 1:
                parameter.normal_(0.0, 0.3)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder
