"""transformers captioners (BLIP's `BlipForConditionalGeneration`, `GitForCausalLM`): the
photo resized by photoseek's decoder to the processor's size, standardised by the model's own
processor, and captioned by the model's own `generate`."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from indexer.captioning.pixels import square_pixels
from indexer.captioning.protocol import Generation, Placement
from indexer.captioning.spec import CaptionerSpec, check_hf_config
from indexer.errors import WeightsUnavailable
from indexer.models.fingerprints import cache_key
from indexer.models.hf_checkpoint import download, fingerprint, require_transformers
from indexer.models.hf_dual_spec import processor_preprocess
from indexer.models.image_input import preprocess_input
from indexer.models.loading import default_device
from indexer.models.precision import resolve_precision

if TYPE_CHECKING:
    from PIL import Image

    from indexer.media.decode import ImageInput


class HfCaptioner:
    """Captions from a transformers BLIP or GIT captioning checkpoint."""

    def __init__(
        self, spec: str, model: Any, processor: Any, settings: Generation, weights: str
    ) -> None:
        self.spec, self.model, self.processor, self.settings = spec, model, processor, settings
        raw = processor.image_processor.to_dict()
        self.image_input: ImageInput = preprocess_input(processor_preprocess(raw, spec))
        self.fingerprint = cache_key("hf", type(model).__name__, weights, settings.key())

    @classmethod
    def load(cls, parsed: CaptionerSpec, settings: Generation, at: Placement) -> HfCaptioner:
        require_transformers("transformers captioners")
        import torch
        import transformers

        folder = parsed.folder or download(parsed.repo, "--captioner")
        try:
            config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise WeightsUnavailable(f"--captioner {parsed.source}: no config.json: {e}") from None
        name = check_hf_config(config, parsed.source)
        device = at.device or default_device()
        dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[
            resolve_precision(at.precision, device)
        ]
        try:
            model = getattr(transformers, name).from_pretrained(folder, local_files_only=True)
            processor = transformers.AutoProcessor.from_pretrained(folder, local_files_only=True)
        except (OSError, ValueError) as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise WeightsUnavailable(f"--captioner {parsed.source}: cannot load: {first}") from None
        model = model.to(device=device, dtype=dtype).eval()
        return cls(parsed.source, model, processor, settings, fingerprint(Path(folder)))

    def describe_spec(self) -> str:
        return f"{type(self.model).__name__} {self.spec} ({self.settings.mode})"

    def pixel_values(self, images: Sequence[Image.Image]) -> Any:
        """The model's input for `images`: photoseek's resize, then the processor's rescale
        and normalisation only (its own resize and crop would repeat photoseek's)."""
        pixels = list(square_pixels(images, self.image_input))
        inputs = self.processor(
            images=pixels, return_tensors="pt", do_resize=False, do_center_crop=False
        )
        return inputs["pixel_values"].to(device=self.model.device, dtype=self.model.dtype)

    def generate_options(self) -> dict[str, Any]:
        """`generate` keyword arguments for the settings (lengths count the start token)."""
        s = self.settings
        options: dict[str, Any] = {
            "max_length": s.max_tokens,
            "min_length": s.min_tokens,
            "do_sample": s.mode in ("top_k", "top_p"),
            "num_beams": s.beams if s.mode == "beam" else 1,
        }
        if s.mode == "top_k":
            options.update(top_k=s.top_k, top_p=1.0, temperature=s.temperature)
        elif s.mode == "top_p":
            options.update(top_k=0, top_p=s.top_p, temperature=s.temperature)
        return options

    def caption(self, images: Sequence[Image.Image]) -> list[str]:
        import torch

        if not images:
            return []
        pixel_values = self.pixel_values(images)
        devices = [self.model.device] if self.model.device.type == "cuda" else []
        # sampling draws from torch's global generator: seeded here, restored afterwards
        with torch.inference_mode(), torch.random.fork_rng(devices=devices):
            torch.manual_seed(self.settings.seed)
            out = self.model.generate(pixel_values=pixel_values, **self.generate_options())
        return [text.strip() for text in self.processor.batch_decode(out, skip_special_tokens=True)]
