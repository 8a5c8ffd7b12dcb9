"""Captioners: models that write a caption for a photo (open_clip CoCa, transformers BLIP and
GIT), behind one small protocol. `load_captioner(SPEC)` is the one entry point; the SPEC forms
are in `indexer.captioning.spec`."""

from __future__ import annotations

from indexer.captioning.protocol import MODES, Captioner, Generation, Placement
from indexer.captioning.spec import (
    CaptionerSpec,
    coca_model,
    index_model_captioner,
    parse_captioner,
)

__all__ = [
    "MODES",
    "Captioner",
    "CaptionerSpec",
    "Generation",
    "Placement",
    "coca_model",
    "index_model_captioner",
    "load_captioner",
    "parse_captioner",
]


def load_captioner(
    spec: str | CaptionerSpec,
    generation: Generation | None = None,
    device: str | None = None,
    precision: str = "auto",
) -> Captioner:
    """The captioner a SPEC names, loaded and ready on `device` (default: CUDA when there is
    one) in `precision` (as for indexing); BadCaptioner / WeightsUnavailable, one line, for one
    that cannot be loaded."""
    parsed = parse_captioner(spec) if isinstance(spec, str) else spec
    settings, at = generation or Generation(), Placement(device, precision)
    if parsed.kind == "coca":
        from indexer.captioning.coca import CocaCaptioner

        return CocaCaptioner.load(parsed, settings, at)
    from indexer.captioning.hf import HfCaptioner

    return HfCaptioner.load(parsed, settings, at)
