"""Shapes world: a synthetic benchmark for compositional image-text matching.

Each scene shows two objects, each a (colour, shape), one placed relative to the other, on a
muted flat or gradient background with mild pixel noise. Captions follow exactly one grammar::

    a {colour1} {shape1} {relation} a {colour2} {shape2}

where ``relation`` is ``left of`` or ``above``, ``colour1 != colour2`` and ``shape1 != shape2``;
object 1 (the subject) is the one left of / above object 2. Example:
``a red circle left of a blue square``.

Twin groups make a bag-of-words model fail. For a base scene (c1, s1, rel, c2, s2) the group is

* T0 ``a c1 s1 rel a c2 s2`` (the scene itself),
* T1 ``a c2 s1 rel a c1 s2`` (colours swapped),
* T2 ``a c2 s2 rel a c1 s1`` (objects swapped: same objects, positions exchanged),
* T3 ``a c1 s2 rel a c2 s1`` (both),

all with the same words and all visually distinct. The four images of a group share one
`Layout` (background, object sizes and positions, noise), so only composition differs.

The article is always ``a``, even before ``orange`` (``a orange star``), so every caption has
the same 7-word shape; colours, shapes and relations are `COLOURS`, `SHAPES` and `RELATIONS`.

Split: the twin relation partitions all scenes into groups of four. A group is held out for test
when BLAKE2b with an 8-byte digest, over its four captions sorted and joined with ``|`` and read
as a big-endian integer, is divisible by `HOLDOUT_MODULUS`; train scenes come only from the other
groups (284 of the 1,176 groups are held out: enough for a test gallery of 1,000 images). So no
test caption appears in ``train.jsonl``, neither as a caption nor as a negative. Train scenes
and test groups are drawn from independent seed streams spawned from the dataset seed.

Files written by `write_dataset`: ``train/gGGGGGG_tK.png``, ``test/gGGGGG_tK.png``,
``train.jsonl`` (``{"image", "caption", "negatives", "group", "boxes"}``) and ``test.jsonl``
(``{"image", "caption", "group", "twin", "boxes"}``), image paths relative to the jsonl's folder;
``boxes`` maps each object's words (``"red circle"``) to its tight box in pixels (`object_boxes`):
the explain bench's ground truth, and the training rows' for the head's grounding loss.
"""

from __future__ import annotations

import colorsys
import hashlib
import json
import math
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from indexer.errors import BadInput

RGB = tuple[int, int, int]

COLOURS: dict[str, RGB] = {
    "red": (220, 40, 40),
    "orange": (245, 140, 20),
    "yellow": (245, 220, 40),
    "green": (40, 170, 60),
    "cyan": (40, 200, 220),
    "blue": (40, 80, 230),
    "purple": (150, 60, 210),
    "white": (245, 245, 245),
}
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star", "cross", "diamond", "heart")
RELATIONS: tuple[str, ...] = ("left of", "above")

HOLDOUT_MODULUS = 4
"""One twin group in this many is held out for test (about 25%)."""

HARD_NEGATIVES = 3
"""Every train row's ``negatives`` starts with this many twin captions (T1, T2, T3)."""

_CAPTION = re.compile(r"a (\w+) (\w+) ({}) a (\w+) (\w+)".format("|".join(RELATIONS)))

_SUPERSAMPLE = 4  # shapes are drawn at 4x and box-filtered down: Pillow polygons are aliased
_CIRCLE = 0.9  # a circle's radius, in its slot's half-extents
_NOISE_SIGMA = 4.0  # in 0..255 levels; enough to break flat colours, far too little to shift one


@dataclass(frozen=True)
class Scene:
    """What an image shows: object 1 (the subject) in `relation` to object 2."""

    colour1: str
    shape1: str
    relation: str
    colour2: str
    shape2: str

    def __post_init__(self) -> None:
        for colour in (self.colour1, self.colour2):
            if colour not in COLOURS:
                raise BadInput(f"unknown colour {colour!r}; known: {', '.join(COLOURS)}")
        for shape in (self.shape1, self.shape2):
            if shape not in SHAPES:
                raise BadInput(f"unknown shape {shape!r}; known: {', '.join(SHAPES)}")
        if self.relation not in RELATIONS:
            raise BadInput(f"unknown relation {self.relation!r}; known: {', '.join(RELATIONS)}")
        if self.colour1 == self.colour2 or self.shape1 == self.shape2:
            raise BadInput("the two objects of a scene must differ in colour and in shape")

    @classmethod
    def parse(cls, caption: str) -> Scene:
        """The scene a caption in the module's grammar describes."""
        match = _CAPTION.fullmatch(caption)
        if match is None:
            raise BadInput(f"not a shapes-world caption: {caption!r}")
        return cls(*match.groups())

    def caption(self) -> str:
        """The scene's one caption, in the module's grammar."""
        return f"a {self.colour1} {self.shape1} {self.relation} a {self.colour2} {self.shape2}"

    def listing(self, subject_first: bool = True) -> str:
        """The two objects without their relation, ``a red circle and a blue square``: what
        web alt text tends to say. A dual encoder pretrained on listings has never been asked
        where things are (colours stay bound to their shapes)."""
        first, second = f"a {self.colour1} {self.shape1}", f"a {self.colour2} {self.shape2}"
        return f"{first} and {second}" if subject_first else f"{second} and {first}"

    def twins(self) -> tuple[Scene, Scene, Scene]:
        """The hard negatives T1 (colours swapped), T2 (objects swapped), T3 (both)."""
        c1, s1, rel, c2, s2 = self.colour1, self.shape1, self.relation, self.colour2, self.shape2
        return Scene(c2, s1, rel, c1, s2), Scene(c2, s2, rel, c1, s1), Scene(c1, s2, rel, c2, s1)

    def group(self) -> tuple[Scene, Scene, Scene, Scene]:
        """The whole twin group with this scene as T0."""
        return (self, *self.twins())

    def medium_variants(self) -> dict[str, list[Scene]]:
        """Every valid scene that differs from this one in exactly one slot, keyed by slot."""
        c1, s1, rel, c2, s2 = self.colour1, self.shape1, self.relation, self.colour2, self.shape2
        # A variant repeating the other object's colour or shape would be an invalid scene,
        # which a model could reject without looking at the image.
        return {
            "colour1": [Scene(c, s1, rel, c2, s2) for c in COLOURS if c not in (c1, c2)],
            "shape1": [Scene(c1, s, rel, c2, s2) for s in SHAPES if s not in (s1, s2)],
            "relation": [Scene(c1, s1, r, c2, s2) for r in RELATIONS if r != rel],
            "colour2": [Scene(c1, s1, rel, c, s2) for c in COLOURS if c not in (c1, c2)],
            "shape2": [Scene(c1, s1, rel, c2, s) for s in SHAPES if s not in (s1, s2)],
        }

    def medium_negatives(
        self,
        rng: np.random.Generator,
        count: int = 3,
        keep: Callable[[Scene], bool] | None = None,
    ) -> list[Scene]:
        """Up to `count` one-slot variants, each changing a different slot chosen at random.

        Slots are drawn before values so a relation change is as likely as a colour change;
        `keep` filters candidates (the dataset writer uses it to avoid held-out captions).
        """
        by_slot = {
            slot: [v for v in variants if keep is None or keep(v)]
            for slot, variants in self.medium_variants().items()
        }
        slots = [slot for slot, variants in by_slot.items() if variants]
        chosen = rng.permutation(len(slots))[:count]
        return [by_slot[slots[i]][int(rng.integers(len(by_slot[slots[i]])))] for i in chosen]


def listings(captions: Sequence[str], seed: int) -> list[str]:
    """Each caption's `Scene.listing`, its subject named first or second at random (seeded):
    captions to pretrain a CLIP-like dual encoder that never learns relations."""
    rng = np.random.default_rng(seed)
    return [Scene.parse(c).listing(subject_first=bool(rng.integers(2))) for c in captions]


def group_key(scene: Scene) -> str:
    """A string naming the scene's twin group, the same for all four members."""
    return "|".join(sorted(s.caption() for s in scene.group()))


def held_out(scene: Scene) -> bool:
    """Whether the scene's twin group belongs to the test split (stable across runs)."""
    digest = hashlib.blake2b(group_key(scene).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % HOLDOUT_MODULUS == 0


def all_scenes() -> Iterator[Scene]:
    """Every valid scene, in a fixed order."""
    for c1 in COLOURS:
        for c2 in COLOURS:
            for s1 in SHAPES:
                for s2 in SHAPES:
                    for rel in RELATIONS:
                        if c1 != c2 and s1 != s2:
                            yield Scene(c1, s1, rel, c2, s2)


@dataclass(frozen=True)
class Slot:
    """Where one object goes: centre and half-extent, as fractions of the image side."""

    x: float
    y: float
    radius: float

    def box(self, size: int) -> tuple[float, float, float, float]:
        """The slot's bounding box (left, top, right, bottom) in pixels of a `size` image."""
        return (
            (self.x - self.radius) * size,
            (self.y - self.radius) * size,
            (self.x + self.radius) * size,
            (self.y + self.radius) * size,
        )


@dataclass(frozen=True)
class Layout:
    """Everything in an image except its composition; the four twins of a group share one."""

    background: tuple[RGB, RGB]  # equal colours mean a flat background
    gradient_angle: float  # radians; direction in which the gradient runs from first to second
    subject: Slot  # object 1's place: left of / above `reference`
    reference: Slot
    noise_seed: int


def _muted_colour(rng: np.random.Generator) -> RGB:
    # Low saturation and middle value keep every palette colour over 75 RGB levels away.
    rgb = colorsys.hsv_to_rgb(rng.random(), rng.uniform(0.05, 0.25), rng.uniform(0.30, 0.58))
    r, g, b = (round(c * 255) for c in rgb)
    return r, g, b


def sample_layout(relation: str, rng: np.random.Generator) -> Layout:
    """A random layout for a scene with `relation`: background, sizes, positions, noise."""
    if relation not in RELATIONS:
        raise BadInput(f"unknown relation {relation!r}; known: {', '.join(RELATIONS)}")
    first = _muted_colour(rng)
    background = (first, _muted_colour(rng)) if rng.random() < 0.5 else (first, first)
    angle = float(rng.uniform(0, 2 * math.pi))

    margin = 0.04
    r1, r2 = (float(r) for r in rng.uniform(0.13, 0.19, size=2))
    gap = float(rng.uniform(0.06, 0.12))
    span = 2 * r1 + gap + 2 * r2
    start = float(rng.uniform(margin, 1 - margin - span))
    along1, along2 = start + r1, start + 2 * r1 + gap + r2
    # Both objects share a cross-axis line, each nudged a little: the offset stays well below
    # the along-axis distance, so "left of" never also reads as "above".
    reach = max(r1, r2) + margin
    line = float(rng.uniform(reach, 1 - reach))
    across1, across2 = (
        min(max(line + float(d), r + margin), 1 - r - margin)
        for d, r in zip(rng.uniform(-0.05, 0.05, size=2), (r1, r2), strict=True)
    )
    if relation == "left of":
        subject, reference = Slot(along1, across1, r1), Slot(along2, across2, r2)
    else:
        subject, reference = Slot(across1, along1, r1), Slot(across2, along2, r2)
    return Layout(background, angle, subject, reference, int(rng.integers(2**32)))


def _unit_heart(points: int = 48) -> list[tuple[float, float]]:
    """The classic parametric heart, scaled and centred to fit the square [-1, 1]^2."""
    ts = [2 * math.pi * i / points for i in range(points)]
    xs = [16 * math.sin(t) ** 3 for t in ts]
    ys = [
        -(13 * math.cos(t) - 5 * math.cos(2 * t) - 2 * math.cos(3 * t) - math.cos(4 * t))
        for t in ts
    ]
    mid = (max(ys) + min(ys)) / 2
    half = max(max(xs), (max(ys) - min(ys)) / 2)
    return [(x / half, (y - mid) / half) for x, y in zip(xs, ys, strict=True)]


_HEART = _unit_heart()


def _outline(shape: str, cx: float, cy: float, r: float) -> list[tuple[float, float]]:
    """Polygon vertices of `shape`, fitting the square of half-side `r` around (cx, cy)."""

    def ring(radii: list[float], start: float, dy: float = 0.0) -> list[tuple[float, float]]:
        step = 2 * math.pi / len(radii)
        return [
            (cx + rad * math.cos(start + i * step), cy + dy + rad * math.sin(start + i * step))
            for i, rad in enumerate(radii)
        ]

    up = -math.pi / 2
    if shape == "square":
        h = 0.8 * r
        return [(cx - h, cy - h), (cx + h, cy - h), (cx + h, cy + h), (cx - h, cy + h)]
    if shape == "triangle":
        # Equilateral, point up, shifted so its bounding box is centred.
        return ring([1.1 * r] * 3, up, dy=0.275 * r)
    if shape == "star":
        return ring([r, 0.42 * r] * 5, up, dy=0.095 * r)
    if shape == "diamond":
        # Narrower than tall, so it never reads as a tilted square.
        return [(cx, cy - r), (cx + 0.65 * r, cy), (cx, cy + r), (cx - 0.65 * r, cy)]
    if shape == "heart":
        return [(cx + x * 0.95 * r, cy + y * 0.95 * r) for x, y in _HEART]
    if shape == "cross":
        a, w = 0.9 * r, 0.3 * r
        # Clockwise from the top arm's left corner; each arm is 0.6 r wide.
        xs = (-w, w, w, a, a, w, w, -w, -w, -a, -a, -w)
        ys = (-a, -a, -w, -w, w, w, a, a, w, w, -w, -w)
        return [(cx + dx, cy + dy) for dx, dy in zip(xs, ys, strict=True)]
    raise BadInput(f"unknown shape {shape!r}; known: {', '.join(SHAPES)}")


def _coverage(shape: str, slot: Slot, size: int) -> np.ndarray:
    """Anti-aliased coverage in 0..1 of `shape` drawn in `slot`, as a (size, size) array."""
    big = size * _SUPERSAMPLE
    mask = Image.new("L", (big, big), 0)
    draw = ImageDraw.Draw(mask)
    cx, cy, r = slot.x * big, slot.y * big, slot.radius * big
    if shape == "circle":
        rc = _CIRCLE * r
        draw.ellipse((cx - rc, cy - rc, cx + rc, cy + rc), fill=255)
    else:
        draw.polygon(_outline(shape, cx, cy, r), fill=255)
    return np.asarray(mask.reduce(_SUPERSAMPLE), dtype=np.float32) / 255.0


def _background(layout: Layout, size: int) -> np.ndarray:
    first, second = (np.array(c, dtype=np.float32) for c in layout.background)
    coords = (np.arange(size, dtype=np.float32) + 0.5) / size - 0.5
    # Projection onto the gradient direction, rescaled to 0..1 across the image's extent.
    cos, sin = math.cos(layout.gradient_angle), math.sin(layout.gradient_angle)
    t = coords[None, :] * cos + coords[:, None] * sin
    t = (t - t.min()) / max(float(t.max() - t.min()), 1e-6)
    return first + (second - first) * t[:, :, None]


def render(scene: Scene, layout: Layout, size: int = 64, *, noise: bool = True) -> Image.Image:
    """Draw `scene` with `layout` as a `size` x `size` RGB image.

    The result is a pure function of the arguments; ``noise=False`` leaves flat object colours,
    which makes the image easy to inspect by colour.
    """
    if size < 16:
        raise BadInput(f"image size must be at least 16 px, got {size}")
    pixels = _background(layout, size)
    for colour, shape, slot in _objects(scene, layout):
        alpha = _coverage(shape, slot, size)[:, :, None]
        pixels = pixels * (1 - alpha) + np.array(COLOURS[colour], dtype=np.float32) * alpha
    if noise:
        jitter = np.random.default_rng(layout.noise_seed).normal(0.0, _NOISE_SIGMA, pixels.shape)
        pixels = pixels + jitter
    return Image.fromarray(np.clip(np.rint(pixels), 0, 255).astype(np.uint8))


def _objects(scene: Scene, layout: Layout) -> tuple[tuple[str, str, Slot], ...]:
    return (
        (scene.colour1, scene.shape1, layout.subject),
        (scene.colour2, scene.shape2, layout.reference),
    )


def object_boxes(scene: Scene, layout: Layout, size: int = 64) -> dict[str, list[float]]:
    """Each object's tight bounding box [left, top, right, bottom] in pixels of the `size`
    image `render` draws, keyed by its words ``colour shape``: where the words point."""
    boxes = {}
    for colour, shape, slot in _objects(scene, layout):
        cx, cy, r = slot.x * size, slot.y * size, slot.radius * size
        if shape == "circle":
            points = [(cx - _CIRCLE * r, cy - _CIRCLE * r), (cx + _CIRCLE * r, cy + _CIRCLE * r)]
        else:
            points = _outline(shape, cx, cy, r)
        xs, ys = [x for x, _ in points], [y for _, y in points]
        boxes[f"{colour} {shape}"] = [round(v, 3) for v in (min(xs), min(ys), max(xs), max(ys))]
    return boxes


@dataclass(frozen=True)
class TrainRow:
    """One line of ``train.jsonl``: hard (twin) negatives first, then medium ones."""

    image: str  # relative to the folder holding the jsonl
    caption: str
    negatives: list[str]
    group: int  # the train twin group: its four rows share one layout
    boxes: dict[str, list[float]] = field(default_factory=dict)  # {} in files written before


@dataclass(frozen=True)
class TwinRow:
    """One line of ``test.jsonl``: one image of a twin group."""

    image: str  # relative to the folder holding the jsonl
    caption: str
    group: int
    twin: int  # 0..3, as in the module docstring
    boxes: dict[str, list[float]] = field(default_factory=dict)  # {} in files written before


@dataclass(frozen=True)
class DatasetFiles:
    """What `write_dataset` wrote."""

    root: Path
    train_jsonl: Path
    test_jsonl: Path
    train_rows: int
    test_rows: int


def held_out_groups() -> list[tuple[Scene, ...]]:
    """Every test-split twin group, members sorted by caption, groups in a fixed order."""
    groups: dict[str, tuple[Scene, ...]] = {}
    for scene in all_scenes():
        if held_out(scene):
            groups.setdefault(group_key(scene), tuple(sorted(scene.group(), key=Scene.caption)))
    return [groups[key] for key in sorted(groups)]


def write_dataset(
    out_dir: Path,
    *,
    train_groups: int,
    test_groups: int,
    size: int = 64,
    seed: int = 0,
    medium: int = 3,
) -> DatasetFiles:
    """Write a shapes-world dataset: PNGs under train/ and test/, plus train/test jsonl.

    Training data are twin groups too: `train_groups` base scenes drawn with replacement from
    the non-held-out groups, each rendered with one layout as all four twins. Every train row
    has its 3 twin captions and up to `medium` one-slot variants as negatives, and a ``group``
    id shared by the four, so training batches them together (each is the others' hardest
    negative). Test groups are distinct held-out groups, each with a random member as T0.
    Same arguments, same bytes.
    """
    if train_groups < 0 or test_groups < 0 or medium < 0:
        raise BadInput("train_groups, test_groups and medium must not be negative")
    candidates = held_out_groups()
    if test_groups > len(candidates):
        raise BadInput(f"asked for {test_groups} test groups; the split has {len(candidates)}")
    train_pool = [scene for scene in all_scenes() if not held_out(scene)]
    train_rng, test_rng = (np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(2))

    out_dir = Path(out_dir)
    (out_dir / "train").mkdir(parents=True, exist_ok=True)
    (out_dir / "test").mkdir(parents=True, exist_ok=True)

    train_rows = []
    for g in range(train_groups):
        base = train_pool[int(train_rng.integers(len(train_pool)))]
        layout = sample_layout(base.relation, train_rng)
        for k, scene in enumerate(base.group()):
            variants = scene.medium_negatives(train_rng, medium, keep=_in_train_split)
            name = f"train/g{g:06d}_t{k}.png"
            render(scene, layout, size).save(out_dir / name)
            negatives = [s.caption() for s in (*scene.twins(), *variants)]
            boxes = object_boxes(scene, layout, size)
            train_rows.append(TrainRow(name, scene.caption(), negatives, g, boxes))

    twin_rows = []
    picks = test_rng.choice(len(candidates), size=test_groups, replace=False)
    for g, pick in enumerate(picks):
        members = candidates[int(pick)]
        base = members[int(test_rng.integers(len(members)))]
        layout = sample_layout(base.relation, test_rng)
        for k, scene in enumerate(base.group()):
            name = f"test/g{g:05d}_t{k}.png"
            render(scene, layout, size).save(out_dir / name)
            boxes = object_boxes(scene, layout, size)
            twin_rows.append(TwinRow(name, scene.caption(), g, k, boxes))

    train_jsonl, test_jsonl = out_dir / "train.jsonl", out_dir / "test.jsonl"
    _write_jsonl(train_jsonl, train_rows)
    _write_jsonl(test_jsonl, twin_rows)
    return DatasetFiles(out_dir, train_jsonl, test_jsonl, len(train_rows), len(twin_rows))


def read_train(path: Path) -> list[TrainRow]:
    """The rows of a ``train.jsonl``; image paths stay relative to its folder."""
    return [TrainRow(**record) for record in _read_jsonl(path)]


def read_test(path: Path) -> list[TwinRow]:
    """The rows of a ``test.jsonl``; image paths stay relative to its folder."""
    return [TwinRow(**record) for record in _read_jsonl(path)]


def _in_train_split(scene: Scene) -> bool:
    return not held_out(scene)


def _write_jsonl(path: Path, rows: list[TrainRow] | list[TwinRow]) -> None:
    with path.open("w", encoding="utf-8", newline="\n") as f:
        for row in rows:
            f.write(json.dumps(asdict(row), ensure_ascii=False) + "\n")


def _read_jsonl(path: Path) -> list[dict]:
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line.strip()]
