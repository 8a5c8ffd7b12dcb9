"""Wiring in one place: the engine over an index directory, with the query encoders it needs.

`build_engine` resolves the directory, starts loading the ONNX towers a query will use, then
opens the catalog and vector store with those encoders handed in (the engine builds its reranker
from the ITM head on the first reranked query). Nothing heavy is imported at the top: a cold
`photoseek search` starts the encoders loading before the catalog, SQLAlchemy and FAISS imports,
which then overlap the loading instead of preceding it.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from indexer.locations import TOWERS_DIR
from indexer.locations import index_dir as resolve_index
from indexer.store.catalog_url import sqlite_file

if TYPE_CHECKING:
    from search.encoders.towers import HeadScorer, ImageEncoder, TextEncoder
    from search.engine import Engine, Knn
    from search.query import Term


@dataclass(frozen=True)
class Preload:
    """Which query encoders start loading as the engine opens; the others load on first use."""

    text: bool = False
    image: bool = False
    head: bool = False

    @classmethod
    def for_terms(cls, terms: Sequence[Term], rerank: bool = False) -> Preload:
        """What a query needs: the text tower for text terms, the image tower for image terms,
        and the ITM head when it is reranked."""
        return cls(text=any(t.text for t in terms), image=any(t.image for t in terms), head=rerank)


def build_engine(
    index_dir: str | os.PathLike[str] | None = None,
    *,
    preload: Preload | None = None,
    model: str | None = None,
    knn: Knn | None = None,
    reranker: str | None = None,
    light: bool = False,
    once: bool = False,
    gpu: bool = False,
    text_class: type[TextEncoder] | None = None,
    reuse: Engine | None = None,
) -> Engine:
    """The engine over `index_dir` (default: $PHOTOSEEK_INDEX, else the XDG data folder).

    `model`, a `--model` spec, raises ModelMismatch unless the index was built with it.
    `reranker`, a `--reranker` spec other than `head`, opens that pretrained reranker (with
    the index's calibration and vision cache) and hands it to the engine.
    `light`: read the catalog with the stdlib sqlite3 reader (`Engine.open`): for a query
    without filters, which then never imports SQLAlchemy (only for the directory's own SQLite
    file: a catalog named by URL is read through SQLAlchemy).
    `once`: the process answers one query and exits (the CLI): the text tower skips start-up
    work that pays only over many queries (`TextEncoder.once`), and a Flat vector file is
    scanned with numpy, never importing faiss (`Engine.open`).
    `gpu`: searches may use a GPU copy of the index where it pays (`Engine.open`).
    `text_class`: the text encoder to preload instead of `TextEncoder` (the server's
    coalescing one).
    `reuse`: an engine over the same exported towers, whose loaded encoders the new one takes
    over instead of loading its own (the server reopening after a re-index).
    """
    directory = resolve_index(index_dir)
    light = light and sqlite_file(directory)  # the sqlite3 reader reads the directory's own file
    if reuse is not None:
        text, image, head = reuse.encoders()
    else:
        text, image, head = _start_loading(directory, preload or Preload(), text_class, once)
    from search.engine import Engine  # only now: these imports overlap the encoders' loading

    cross = None
    if reranker is not None and reranker != "head":
        from search.rerank.kinds import open_reranker  # imports torch and transformers

        cross = open_reranker(reranker, directory).reranker
    engine = Engine.open(
        directory, knn, text_encoder=text, image_encoder=image, head_scorer=head,
        reranker=cross, light=light, once=once, gpu=gpu,
    )  # fmt: skip
    if model:
        from indexer.models.loading import ModelSpec
        from indexer.store.index_dir import check_model

        try:
            check_model(engine.catalog, ModelSpec.parse(model).identity())
        except BaseException:
            engine.close()
            raise
    return engine


def _start_loading(
    directory: Path,
    preload: Preload,
    text_class: type[TextEncoder] | None = None,
    once: bool = False,
) -> tuple[TextEncoder | None, ImageEncoder | None, HeadScorer | None]:
    """The preloaded encoders, each loading in its own thread as soon as it is made (`once`:
    see `build_engine`)."""
    towers = directory / TOWERS_DIR
    if not (towers / "towers.json").is_file():
        return None, None, None  # the engine names what is missing if a query needs it
    from search.encoders.towers import HeadScorer, ImageEncoder, TextEncoder

    text = (text_class or TextEncoder)(towers) if preload.text else None
    if text is not None:
        text.once = once  # before it starts loading
        text.load_in_background()
    image = ImageEncoder(towers).load_in_background() if preload.image else None
    head = HeadScorer(towers).load_in_background() if preload.head else None
    return text, image, head
