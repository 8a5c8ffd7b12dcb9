"""open_clip CoCa as a captioner: the image encoded once, then photoseek's decode loop over
the model's own forward (text tower + multimodal decoder), one token at a time."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from indexer.captioning.decoding import Step, beam_search, sample
from indexer.captioning.pixels import square_pixels
from indexer.captioning.protocol import Generation, Placement
from indexer.captioning.spec import CaptionerSpec
from indexer.errors import BadCaptioner
from indexer.models.fingerprints import cache_key
from indexer.models.loading import LoadedModel, load_model
from indexer.models.pixels import standardise

if TYPE_CHECKING:
    import torch
    from PIL import Image

    from indexer.media.decode import ImageInput


class CocaCaptioner:
    """Captions from an open_clip CoCa (`coca_ViT-B-32` and friends, or one photoseek trained)."""

    def __init__(self, spec: str, loaded: LoadedModel, settings: Generation) -> None:
        tokenizer = loaded.tokenizer
        if not all(hasattr(tokenizer, a) for a in ("sot_token_id", "eot_token_id", "decode")):
            raise BadCaptioner(
                f"--captioner {spec}: its tokenizer ({type(tokenizer).__name__}) is not CLIP's "
                "BPE; photoseek decodes CoCa captions with CLIP's tokenizer only"
            )
        self.spec, self.loaded = spec, loaded
        self.start, self.end = int(tokenizer.sot_token_id), int(tokenizer.eot_token_id)
        # the text tower's positions bound the caption, start token included
        longest = int(getattr(loaded.model.text, "context_length", settings.max_tokens))
        self.settings = dataclasses.replace(settings, max_tokens=min(settings.max_tokens, longest))
        self.image_input: ImageInput = loaded.image_input
        identity = loaded.identity
        self.fingerprint = cache_key(
            "coca", identity.architecture, identity.weights, self.settings.key()
        )

    @classmethod
    def load(cls, parsed: CaptionerSpec, settings: Generation, at: Placement) -> CocaCaptioner:
        assert parsed.model is not None  # parse_captioner sets it for kind "coca"
        loaded = load_model(parsed.model, precision=at.precision, device=at.device)
        if not hasattr(loaded.model, "text_decoder"):
            raise BadCaptioner(f"--captioner {parsed.source}: the model loaded is not a CoCa")
        return cls(parsed.source, loaded, settings)

    @property
    def model(self) -> Any:
        """The open_clip CoCa, in eval mode."""
        return self.loaded.model

    def describe_spec(self) -> str:
        return f"CoCa {self.loaded.identity.spec} ({self.settings.mode})"

    def caption(self, images: Sequence[Image.Image]) -> list[str]:
        import torch

        if not images:
            return []
        loaded, settings = self.loaded, self.settings
        pixels = torch.from_numpy(square_pixels(images, self.image_input))
        with torch.inference_mode():
            x = standardise(pixels.to(loaded.device).permute(0, 3, 1, 2), loaded.mean, loaded.std)
            latent, embs = self.model._encode_image(x.to(loaded.dtype))
            if settings.mode == "beam":
                rows = [
                    beam_search(
                        self._step(latent[i : i + 1], embs[i : i + 1]),
                        self.start, self.end, settings, loaded.device,
                    )
                    for i in range(len(images))
                ]  # fmt: skip
            else:
                step = self._step(latent, embs)
                rows = sample(step, len(images), self.start, self.end, settings, loaded.device)
        return [str(self.loaded.tokenizer.decode(row)).strip() for row in rows]

    def _step(self, latent: torch.Tensor, embs: torch.Tensor) -> Step:
        """Next-token logits for rows of tokens, as open_clip's own `generate` computes them:
        the forward on the whole sequence so far with the image encoded once (one image's
        latent and tokens are broadcast to all its beams)."""

        def step(tokens: torch.Tensor) -> torch.Tensor:
            rows = tokens.shape[0]
            out = self.model(
                None,
                tokens,
                image_latent=latent.expand(rows, -1),
                image_embs=embs.expand(rows, -1, -1),
                output_labels=False,
            )
            return out["logits"][:, -1]

        return step
