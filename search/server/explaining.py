"""The server's explainers: the torch model of each model folder, loaded on its first explain
and kept, and one explain at a time (Grad-CAM hooks a shared model's layers as it runs)."""

from __future__ import annotations

import io
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING

from search.tools.explain import Explanation, explain, load_explainer, model_folder

if TYPE_CHECKING:
    from pathlib import Path

    from indexer.models.loading import LoadedModel


@dataclass(frozen=True)
class Explained:
    """An explanation and its picture: the map drawn over the photo, as PNG bytes."""

    explanation: Explanation
    png: bytes


class Explainers:
    """Explains photos with the ITM head of the model an index was built with."""

    def __init__(self) -> None:
        self._loaded: dict[str, LoadedModel] = {}
        self._lock = threading.Lock()

    def explain(
        self, index_dir: Path, data: bytes, ext: str, text: str, layer: int | None, png: bool
    ) -> Explained:
        """Where `text` matches the photo in `data`, as `photoseek explain` maps and draws it
        (the picture only when `png`; `layer` None: the default one); BadInput for a model
        without an ITM head."""
        from search.tools.gradcam import DEFAULT_LAYER  # torch: only once a photo is explained
        from search.tools.heatmap import overlay_for

        folder = model_folder(index_dir, None)  # per call: a re-index may change the model
        with self._lock:
            loaded = self._loaded.get(folder)
            if loaded is None:
                loaded = self._loaded[folder] = load_explainer(folder)
            explanation = explain(
                loaded, data, ext, text, DEFAULT_LAYER if layer is None else layer
            )
        picture = b""
        if png:
            out = io.BytesIO()
            overlay_for(data, ext, explanation.map_of(), explanation.geometry).save(out, "PNG")
            picture = out.getvalue()
        return Explained(explanation, picture)
