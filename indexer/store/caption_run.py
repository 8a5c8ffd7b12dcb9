"""The keyword stage of `photoseek index`: names for every image, and captions where asked.

It runs after embedding. Every image gets its file and folder names as keywords; with a
captioner (`--captions --captioner SPEC`, recorded so that a plain re-index goes on captioning
new photos), each live image whose caption is missing or was written by another captioner (its
fingerprint) is decoded at the captioner's size and captioned, a batch at a time, each batch
committed: a killed run loses at most a batch and the next one resumes. A file that cannot be
decoded gets its reason recorded and the batch goes on.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from indexer.errors import BadInput, UnreadableImage
from indexer.media import decode as decoding
from indexer.media.discovery import extension
from indexer.progress import Progress, ProgressFn
from indexer.store import keywords
from indexer.store.keywords import CaptionResult

if TYPE_CHECKING:
    from PIL import Image

    from indexer.store.catalog import Catalog

CAPTIONER_META = "captioner"  # {"spec", "fingerprint"} of the captioner the index uses


class StageCaptioner(Protocol):
    """What this stage needs of a captioner (`indexer.captioning.Captioner` has it)."""

    spec: str  # as given, its paths made absolute: what later runs load
    fingerprint: str
    image_input: decoding.ImageInput

    def caption(self, images: Sequence[Image.Image]) -> list[str]: ...


@dataclass(frozen=True)
class CaptionOptions:
    """A run's captioning: `captions` turns it on (with `captioner`, or the one recorded);
    a captioner recorded by an earlier run keeps it on."""

    captions: bool = False
    captioner: str | None = None
    batch_size: int = 32
    workers: int = 1


def update_keywords(
    catalog: Catalog,
    options: CaptionOptions,
    load: Callable[[str], StageCaptioner],
    progress: ProgressFn | None = None,
) -> int:
    """Fill in every image's names and, with a captioner, its caption; returns how many images
    were captioned (or failed to be) this run."""
    keywords.fill_names(catalog.engine, catalog.root_paths())
    recorded = json.loads(catalog.get_meta(CAPTIONER_META) or "null")
    spec = options.captioner or (recorded["spec"] if recorded else None)
    if spec is None:
        if options.captions:
            raise BadInput("--captions needs --captioner SPEC (the index has none recorded yet)")
        return 0
    if recorded and recorded["spec"] == spec:
        # the same captioner as last time: load it only if some photo still lacks its caption
        if not keywords.due_for_captions(catalog.engine, recorded["fingerprint"]):
            return 0
    captioner = load(spec)
    catalog.set_meta(
        CAPTIONER_META, json.dumps({"spec": captioner.spec, "fingerprint": captioner.fingerprint})
    )
    due = keywords.due_for_captions(catalog.engine, captioner.fingerprint)
    size = max(1, options.batch_size)
    if progress:
        progress(Progress("captioning", 0, len(due), "img"))
    with ThreadPoolExecutor(max(1, options.workers), thread_name_prefix="caption") as pool:
        for start in range(0, len(due), size):
            batch = due[start : start + size]
            decoded = list(pool.map(lambda row: _decode(row[1], captioner.image_input), batch))
            keywords.store_captions(catalog.engine, captioner.fingerprint,
                                    _captioned(captioner, batch, decoded))  # fmt: skip
            if progress:
                progress(Progress("captioning", start + len(batch), len(due), "img"))
    return len(due)


def _decode(path: bytes, shape: decoding.ImageInput) -> Image.Image | str:
    """The photo at the captioner's size, or why it cannot be had."""
    from PIL import Image

    try:
        data = decoding.read_image(path, extension(path))
        return Image.fromarray(decoding.decode(data, extension(path), shape).pixels)
    except OSError as e:
        return f"unreadable: {e.strerror or e}"
    except UnreadableImage as e:
        return str(e)


def _captioned(
    captioner: StageCaptioner, batch: list[tuple[int, bytes]], decoded: list[Image.Image | str]
) -> list[CaptionResult]:
    pictures = [d for d in decoded if not isinstance(d, str)]
    texts = iter(captioner.caption(pictures) if pictures else [])
    return [
        CaptionResult(image_id, error=d)
        if isinstance(d, str)
        else CaptionResult(image_id, next(texts))
        for (image_id, _), d in zip(batch, decoded, strict=True)
    ]
