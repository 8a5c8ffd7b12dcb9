"""What every captioner offers: a stable fingerprint, the decoder resize it wants, and a
batched, deterministic-by-default `caption` call."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from indexer.errors import BadCaptioner

if TYPE_CHECKING:
    from PIL import Image

    from indexer.media.decode import ImageInput

MODES = ("greedy", "top_k", "top_p", "beam")


@dataclass(frozen=True)
class Generation:
    """How captions are decoded. Greedy (argmax at each step) is the default: the same image
    always gets the same caption. Sampling modes draw from a generator seeded per batch, so
    they too repeat for the same batch."""

    mode: str = "greedy"  # greedy | top_k | top_p | beam
    max_tokens: int = 30  # the caption's length cap, start token included
    min_tokens: int = 0  # the end token is forbidden before this many tokens
    top_k: int = 50
    top_p: float = 0.9
    temperature: float = 1.0
    beams: int = 4
    seed: int = 0

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise BadCaptioner(f"unknown caption mode {self.mode!r}; choose {', '.join(MODES)}")
        if self.max_tokens < 2 or not 0 <= self.min_tokens < self.max_tokens:
            raise BadCaptioner(
                f"caption length: want 2 <= max_tokens and 0 <= min_tokens < max_tokens, "
                f"got {self.max_tokens} and {self.min_tokens}"
            )
        if self.top_k < 1 or not 0.0 < self.top_p <= 1.0 or self.temperature <= 0 or self.beams < 1:
            raise BadCaptioner(
                "caption sampling: want top_k >= 1, 0 < top_p <= 1, temperature > 0, beams >= 1"
            )

    def key(self) -> str:
        """The settings that change a caption, as text for fingerprints."""
        if self.mode == "greedy":
            return f"greedy/{self.max_tokens}/{self.min_tokens}"
        if self.mode == "beam":
            return f"beam{self.beams}/{self.max_tokens}/{self.min_tokens}"
        knob = self.top_k if self.mode == "top_k" else self.top_p
        length = f"{self.max_tokens}/{self.min_tokens}"
        return f"{self.mode}{knob}/t{self.temperature}/s{self.seed}/{length}"


@dataclass(frozen=True)
class Placement:
    """Where a captioner runs: a torch device (None: CUDA when there is one) and a precision
    as indexing takes it (`auto`: fp16 on CUDA, bf16 on a CPU with native bf16, else fp32)."""

    device: str | None = None
    precision: str = "auto"


class Captioner(Protocol):
    """A model that writes a caption per image.

    `fingerprint` identifies the weights and the generation settings: a stored caption whose
    fingerprint differs was written by another captioner and is due for re-captioning.
    `image_input` is the resize photoseek's decoder must apply (decode at the captioner's own
    size, then hand the pixels over as PIL images of that size)."""

    spec: str  # the SPEC as given (paths made absolute)
    fingerprint: str
    image_input: ImageInput

    def describe_spec(self) -> str:
        """A short name for messages, e.g. `coca coca_ViT-B-32 (greedy)`."""
        ...

    def caption(self, images: Sequence[Image.Image]) -> list[str]:
        """One caption per image, in order."""
        ...
