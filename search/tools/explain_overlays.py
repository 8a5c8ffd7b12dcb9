"""`search --html --explain`: each result's card shows where the query text matches its photo.

The query must be one text (the maps are of its words); the model is the index's own head,
or the BLIP reranker the search names. A result whose file cannot be read or explained now
keeps its plain thumbnail, and the reason is logged: one photo does not cost the page.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

from PIL import Image

from indexer.errors import BadInput, UnreadableImage
from search.hits import Hit
from search.query import Term
from search.tools.explain import Explainer, explainer, read_photo
from search.tools.render import Picture

log = logging.getLogger(__name__)


def query_text(terms: Sequence[Term]) -> str:
    """The one positive text of a query, which `--explain` maps."""
    if len(terms) != 1 or terms[0].text is None or terms[0].weight <= 0:
        raise BadInput("--explain maps one text query: no images or arithmetic")
    return terms[0].text


def overlay_pictures(
    terms: Sequence[Term], index_dir: Path | None, reranker: str | None
) -> Picture:
    """The `render.Picture` of a query's overlays: the model is loaded now, once."""
    text = query_text(terms)
    return _Overlays(explainer(index_dir, None, reranker), text)


class _Overlays:
    """Hit -> its photo with the text's map over it (`heatmap.overlay_for`), or None."""

    def __init__(self, explain: Explainer, text: str) -> None:
        self.explain = explain
        self.text = text

    def __call__(self, hit: Hit) -> Image.Image | None:
        from search.tools.heatmap import overlay_for

        try:
            data, ext = read_photo(Path(os.fsdecode(hit.path)))
            explanation = self.explain(data, ext, self.text, None)
            return overlay_for(data, ext, explanation.map_of(), explanation.geometry)
        except (BadInput, UnreadableImage) as e:
            log.warning("%s: cannot explain: %s", hit.path.decode(errors="replace"), e)
            return None
