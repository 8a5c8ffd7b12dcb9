"""Image→caption: `photoseek describe --caption`, a caption written by a captioner for a photo
read through photoseek's decoder (EXIF orientation, every format it reads, its bomb limits)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from indexer.captioning import Captioner, CaptionerSpec, index_model_captioner
from indexer.errors import BadCaptioner, BadInput, UnreadableImage
from indexer.media.discovery import extension
from search.engine import Engine

NAME_ONE = (
    "name one with --captioner: coca:ARCH:TAG (e.g. "
    "coca:coca_ViT-B-32:mscoco_finetuned_laion2b_s13b_b90k), coca:ARCH:/path/to/checkpoint, "
    "hf:ORG/NAME (e.g. hf:Salesforce/blip-image-captioning-base) or a model folder"
)


@dataclass(frozen=True)
class Caption:
    """A generated caption and the captioner that wrote it."""

    caption: str
    captioner: str  # the SPEC, as `--captioner` takes it


def index_captioner(engine: Engine) -> CaptionerSpec:
    """The index's own model as a captioner; BadCaptioner, saying how to name one, when that
    model is not a CoCa."""
    spec = engine.record.identity.spec
    found = index_model_captioner(spec)
    if found is None:
        raise BadCaptioner(f"the index's model {spec} is not a CoCa and cannot caption; {NAME_ONE}")
    return found


def caption_file(captioner: Captioner, image: Path) -> Caption:
    """The caption `captioner` writes for the image file at `image`."""
    from PIL import Image

    from indexer.media.decode import decode, read_image

    path = os.fsencode(image)
    ext = extension(path)
    try:
        decoded = decode(read_image(path, ext), ext, captioner.image_input)
    except OSError as e:
        raise BadInput(f"cannot read image {image}: {e.strerror or e}") from None
    except UnreadableImage as e:
        raise UnreadableImage(f"{image}: {e}") from None
    text = captioner.caption([Image.fromarray(decoded.pixels)])[0]
    return Caption(text, captioner.spec)
