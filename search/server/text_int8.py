"""The server's text tower in int8, when asked (`ServerConfig.text_precision = "int8"`).

On a 2-core CPU the fp32 text tower is most of a served query's CPU: a ViT-B-32 run streams
its 150 MB of matmul weights whatever the batch (~7 ms), plus ~2.7 ms per text. ONNX Runtime's
dynamically quantised graph (the image engine's quantiser: int8 weights, 7-bit range) reads a
quarter of that and multiplies in integers: the load benchmark's server spent ~6 ms of CPU per
query instead of ~9. It is not the same model: on that benchmark's random ViT-B-32, cosines to
the fp32 embeddings are ≥ 0.997 (mean 0.998), the best hit is the same for 89% of the queries
and the whole top 10 for a third (near ties swap). And a query's embedding depends on the
queries it shares a tower run with: dynamic quantisation scales each activation tensor by the
whole batch's range, so under load a query's scores move by ~1e-3 with its neighbours (fp32
batches move them by ~1e-7). It stays opt-in, never the default. (On the shipped demo model its
cosines to fp32 are ≥ 0.9997 and the gallery's R@1 through the index is fp32's.)

The quantised graph is made once per export and user, in a child process (the quantiser's
peak stays out of the server), and cached under $XDG_CACHE_HOME/photoseek/text-engines, keyed
by the export's tower file name (every export names its files afresh).
"""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

from indexer.locations import cache_dir
from indexer.towers.child_export import QUANTISE, run_in_child
from search.encoders.towers import _existing, _open_session
from search.server.batching import CoalescingTextEncoder

if TYPE_CHECKING:
    import onnxruntime


class Int8TextEncoder(CoalescingTextEncoder):
    """The coalescing text encoder over the int8 copy of the index's text tower."""

    def _session(self) -> onnxruntime.InferenceSession:
        fp32 = _existing(self.folder / self.spec.text_file)
        return _open_session(int8_graph(fp32), self.threads)


def int8_graph(fp32: Path) -> Path:
    """The int8 copy of the text tower graph `fp32`: the cached one, else quantised now."""
    target = cache_dir() / "text-engines" / f"{fp32.stem}-int8.onnx"
    if target.is_file():
        return target
    staging = target.with_name(f".{target.stem}.tmp-{uuid.uuid4().hex[:8]}")
    (staging / "fp32").mkdir(parents=True)
    try:
        # The quantiser reads a copy: an index's towers are hard links into the export cache,
        # and onnx refuses external weights with more than one link (a "hardlink attack").
        for part in fp32.parent.glob(f"{fp32.name}*"):  # the graph and its external weights
            shutil.copyfile(part, staging / "fp32" / part.name)
        source = staging / "fp32" / fp32.name
        job = {"job": QUANTISE, "source": str(source), "target": str(staging / target.name)}
        run_in_child(job, "quantising the text tower")
        os.replace(staging / target.name, target)  # another server's copy is as good
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target
