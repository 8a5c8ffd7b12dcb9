"""The offline demo: a shapes-world gallery, a tiny model, and every query kind.

Nothing is downloaded. `run_demo` generates the gallery and uses the model shipped in
`data/demo-model/` (see `search.demo.shipped`), or with `retrain` trains (or reuses, when
already trained in the same folder) one by the recipe that made it, the way photoseek meets a
user's CLIP: a dual encoder pretrained on captions that only list the objects (``a red circle
and a blue square``, as web alt text does), then the ITM head alone on its frozen towers with
the full captions, its cross-attention taught where each named object is (the shapes world
knows the boxes; `indexer.training.grounding`). It indexes
the gallery with the same pipeline as `photoseek index`, runs text→image queries without and
with rerank (the dual encoder cannot tell a scene from its twins; the head can), an image→image
query and an image→text query, and writes an HTML page of the results.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from indexer.datasets.shapes_world import listings, write_dataset
from indexer.models.model_files import HEAD_FILE, MODEL_WEIGHTS
from indexer.pipeline import IndexOptions, run_index
from indexer.progress import Progress
from indexer.training.evaluation import evaluate_pairs
from indexer.training.pairs import PairRow, read_pairs
from search.demo.shipped import MANIFEST, read_manifest, shipped_dir
from search.engine import Engine
from search.hits import Hit
from search.query import Term
from search.tools.describe import best_texts, text_vectors
from search.tools.render import write_html
from search.wiring import build_engine

if TYPE_CHECKING:
    from indexer.training.loop import TrainProgress

TRAIN_GROUPS = 3000  # 12,000 training images: twin groups of 4
TEST_GROUPS = 60  # 240 gallery images: 60 twin groups of 4
PRETRAIN_EPOCHS = 6  # the dual encoder, on listings
EPOCHS = 6  # the head, on the frozen towers
# The head's box-grounding loss (`indexer.training.grounding`): the shapes world knows where
# each object is, so `photoseek explain` maps the words of an object onto it.
GROUND_WEIGHT = 3.0
QUERIES = 3
K = 5


@dataclass(frozen=True)
class DemoSize:
    """How big the demo's data and training are (the defaults fit ~10 minutes on 2 cores)."""

    train_groups: int = TRAIN_GROUPS
    test_groups: int = TEST_GROUPS
    pretrain_epochs: int = PRETRAIN_EPOCHS
    epochs: int = EPOCHS
    ground_weight: float = GROUND_WEIGHT  # the head stage's box-grounding loss

    @property
    def tag(self) -> str:
        """Names the demo's data, model and index folders: another size never reuses them."""
        sizes = f"g{self.train_groups}-t{self.test_groups}-p{self.pretrain_epochs}-e{self.epochs}"
        return f"{sizes}-w{self.ground_weight:g}"


@dataclass
class DemoReport:
    """What the demo did and found, for the closing summary."""

    folder: Path
    page: Path
    model: Path | None = None
    shipped_quality: dict[str, float] | None = None  # the shipped model's, from its manifest
    trained_now: bool = False
    seconds: dict[str, float] = field(default_factory=dict)
    text_queries: list[tuple[str, list[Hit], list[Hit], bytes]] = field(default_factory=list)
    image_query: tuple[bytes, list[Hit]] | None = None
    describe: tuple[bytes, list[tuple[str, float]], str] | None = None
    quality: dict[str, float] = field(default_factory=dict)


def run_demo(
    folder: Path,
    say: Callable[[str], None],
    train_progress: Callable[[TrainProgress], None] | None = None,
    size: DemoSize | None = None,
    *,
    retrain: bool = False,
    progress: Callable[[Progress], None] | None = None,
) -> DemoReport:
    """Run the whole demo in `folder` (reusing what an earlier run left there): on the shipped
    model, or with `retrain` on a model trained here from scratch by the same recipe.
    `progress` hears from indexing and evaluating, `train_progress` from training."""
    size = size or DemoSize()
    folder.mkdir(parents=True, exist_ok=True)
    report = DemoReport(folder, folder / "results.html")
    if retrain:
        data, model = _retrained(folder, size, say, train_progress, report)
        tag = size.tag
        if (shipped_dir() / MANIFEST).exists():  # absent only while the first one is built
            report.shipped_quality = read_manifest(shipped_dir()).quality
    else:
        shipped = read_manifest(shipped_dir())
        report.shipped_quality = shipped.quality
        data, model = _gallery(folder, size, say, report), shipped_dir()
        tag = "shipped-" + shipped.files[MODEL_WEIGHTS][:12]
        say(f"using the shipped model in {model} (train one here with --retrain)")
    report.model = model

    index = folder / f"index-{tag}"
    clock = time.perf_counter()
    say("indexing the gallery with `photoseek index`")
    summary = run_index(index, IndexOptions(roots=(data / "test",), model=str(model)), progress)
    report.seconds["index"] = time.perf_counter() - clock
    say(f"  {summary.added} added, {summary.unchanged} unchanged in {summary.seconds:.1f}s")

    clock = time.perf_counter()
    tests = read_pairs(data / "test.jsonl")
    with build_engine(index) as engine:
        _text_queries(engine, tests, report)
        _image_and_text_queries(engine, tests, report)
    report.quality = gallery_quality(model, tests, progress)
    report.seconds["queries"] = time.perf_counter() - clock
    _write_page(report)
    return report


def gallery_quality(
    model: Path, tests: list[PairRow], progress: Callable[[Progress], None] | None = None
) -> dict[str, float]:
    """The demo's figures for `model` on its gallery, as `photoseek eval` reports them."""
    quality = evaluate_pairs(model, tests, progress)
    itc, reranked, twins = quality["itc"], quality["itm_k32"], quality["twin_accuracy"]
    # evaluate_pairs returns dict[str, object]: narrowed here until it returns a TypedDict
    assert isinstance(itc, dict) and isinstance(reranked, dict) and isinstance(twins, dict)
    return {
        "t2i_r1_itc": itc["t2i"]["r1"],
        "t2i_r1_rerank": reranked["t2i"]["r1"],
        "twin_itc": twins["itc"],
        "twin_rerank": twins["itm_k32"],
    }


def _gallery(folder: Path, size: DemoSize, say: Callable[[str], None], report: DemoReport) -> Path:
    """The held-out gallery alone (the same images as in a training run's data folder)."""
    clock = time.perf_counter()
    data = folder / f"gallery-t{size.test_groups}"
    if not (data / "test.jsonl").exists():
        say(f"generating the shapes-world gallery in {data}")
        write_dataset(data, train_groups=0, test_groups=size.test_groups, size=64, seed=0)
    report.seconds["generate"] = time.perf_counter() - clock
    return data


def _retrained(
    folder: Path,
    size: DemoSize,
    say: Callable[[str], None],
    progress: Callable[[TrainProgress], None] | None,
    report: DemoReport,
) -> tuple[Path, Path]:
    """Training data and a model trained on them in `folder` (reused when already there)."""
    clock = time.perf_counter()
    data = folder / f"shapes-{size.tag}"
    if not (data / "test.jsonl").exists():
        say(f"generating the shapes-world gallery and training images in {data}")
        write_dataset(
            data, train_groups=size.train_groups, test_groups=size.test_groups, size=64, seed=0
        )
    report.seconds["generate"] = time.perf_counter() - clock
    model = folder / f"model-{size.tag}"
    clock = time.perf_counter()
    if not (model / HEAD_FILE).exists():
        _train(data, folder / f"pretrained-{size.tag}", model, size, say, progress)
        report.trained_now = True
    else:
        say(f"reusing the model trained earlier in {model}")
    report.seconds["train"] = time.perf_counter() - clock
    return data, model


def _train(
    data: Path,
    pretrained: Path,
    model: Path,
    size: DemoSize,
    say: Callable[[str], None],
    progress: Callable[[TrainProgress], None] | None,
) -> None:
    from indexer.training.loop import train
    from indexer.training.options import TrainOptions

    rows = read_pairs(data / "train.jsonl")
    images = [str(r.image) for r in rows]
    groups = [r.group for r in rows if r.group is not None]  # shapes world: every row has one
    if not (pretrained / HEAD_FILE).exists():
        say(
            f"pretraining a tiny CLIP-like dual encoder on {len(rows)} images captioned by "
            f"listings, no relations ({size.pretrain_epochs} epochs)"
        )
        texts = listings([r.caption for r in rows], seed=0)
        train(list(zip(images, texts, strict=True)), pretrained, epochs=size.pretrain_epochs,
              batch_size=128, options=TrainOptions(itm_weight=0.0), progress=progress)  # fmt: skip
    say(
        f"training the ITM head on its frozen towers with the full captions, its words grounded "
        f"in the objects' boxes ({size.epochs} epochs)"
    )
    options = TrainOptions(twin_listwise=1.0, ground_weight=size.ground_weight)
    train([(image, r.caption, r.negatives) for image, r in zip(images, rows, strict=True)], model,
          model=f"local-dir:{pretrained}", lock_image=True, lock_text=True, epochs=size.epochs,
          batch_size=128, groups=groups, boxes=[r.boxes for r in rows],
          options=options, progress=progress)  # fmt: skip


def _text_queries(engine: Engine, tests: list[PairRow], report: DemoReport) -> None:
    """A few captions, ITC top-k and the same reranked by the ITM head: first those whose twin
    the dual encoder ranks above the right image (the confusion the head is for), taken in
    gallery order, never by how the rerank does on them."""
    group_of = {os.fsencode(r.image): r.group for r in tests}
    twin_first: list[tuple[PairRow, bytes, list[Hit]]] = []
    others: list[tuple[PairRow, bytes, list[Hit]]] = []
    for row in tests[:: max(1, len(tests) // (4 * QUERIES))]:
        truth, plain = os.fsencode(row.image), engine.search([Term(text=row.caption)], k=K)
        confused = plain[0].path != truth and group_of.get(plain[0].path) == row.group
        (twin_first if confused else others).append((row, truth, plain))
    for row, truth, plain in (twin_first + others)[:QUERIES]:
        reranked = engine.search([Term(text=row.caption)], k=K, rerank_k=32)
        report.text_queries.append((row.caption, plain, reranked, truth))


def _image_and_text_queries(engine: Engine, tests: list[PairRow], report: DemoReport) -> None:
    query = os.fsencode(tests[0].image)
    report.image_query = (query, engine.search([Term(image=query)], k=K))
    captions = list(dict.fromkeys(r.caption for r in tests))
    vector = engine.encode_images([os.fsencode(tests[1].image)])[0]
    ranked = best_texts(vector, captions, text_vectors(engine, captions), K)
    report.describe = (
        os.fsencode(tests[1].image),
        [(hit.text, hit.score) for hit in ranked],
        tests[1].caption,
    )


def _write_page(report: DemoReport) -> None:
    sections = []
    for caption, plain, reranked, truth in report.text_queries:
        name = os.path.basename(truth).decode()
        sections.append((f"“{caption}” — ITC only (the right image is {name})", plain))
        sections.append((f"“{caption}” — ITC top-32 reranked by the ITM head", reranked))
    if report.image_query:
        query, hits = report.image_query
        sections.append((f"image → image: {os.path.basename(query).decode()}", hits))
    if report.describe:
        image, texts, true_caption = report.describe
        listed = "; ".join(f"{text} ({score:.2f})" for text, score in texts)
        shown = Hit(0, image, texts[0][1], None, None, None)
        sections.append((f"image → text (true caption: “{true_caption}”): {listed}", [shown]))
    write_html(report.page, "photoseek demo: shapes world", sections)
