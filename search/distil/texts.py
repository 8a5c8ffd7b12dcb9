"""The texts a distillation scores: a file, or the built-in photo vocabulary with its templates,
plus the index's stored captions, and the edits of each text that serve as hard negatives.

An edit keeps a text's words and changes what it says: two attributes swapped ("a red car
next to a blue bike" -> "a blue car next to a red bike") or the two sides of a relation swapped.
A shapes-world caption gets its twin captions (`Scene.twins`), which are exactly those edits.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

from indexer.datasets.shapes_world import COLOURS, Scene
from indexer.errors import BadInput
from search.tools.describe import DEFAULT_VOCAB, vocabulary

# Attribute words an edit may swap: the shapes world's colours and the other common ones.
ATTRIBUTES = (*COLOURS, "black", "brown", "grey", "gray", "pink", "small", "big", "old", "young")
# Relations whose two sides an edit may swap, longest first so "left of" wins over "of".
RELATIONS = ("in front of", "next to", "left of", "right of", "behind", "above", "below",
             "under", "on top of", "beside", "on", "with")  # fmt: skip


def read_texts(path: Path) -> list[str]:
    """One text per non-empty line of `path` ('#' starts a comment line), first copies kept."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise BadInput(f"cannot read texts from {path}: {e}") from None
    texts = list(dict.fromkeys(ln.strip() for ln in lines if ln.strip() and not ln.startswith("#")))
    if not texts:
        raise BadInput(f"{path} holds no texts")
    return texts


def vocabulary_texts(name: str = DEFAULT_VOCAB) -> list[str]:
    """Every concept of a built-in vocabulary in every one of its prompt templates."""
    concepts, templates = vocabulary(name)
    return [template.replace("{}", concept) for concept in concepts for template in templates]


def text_pool(texts_file: Path | None) -> list[str]:
    """The texts of `texts_file`, else the built-in photo vocabulary's prompts."""
    return read_texts(texts_file) if texts_file is not None else vocabulary_texts()


def with_captions(texts: list[str], captions: Iterable[str]) -> list[str]:
    """`texts`, then the `captions` a caption model gave the index's photos (`photoseek index
    --captions`), each text once."""
    return list(dict.fromkeys([*texts, *(c.strip() for c in captions if c.strip())]))


def edits(text: str) -> list[str]:
    """Hard negatives of `text`: its twins in the shapes world, else attribute and relation
    swaps (none when it has neither two attributes nor a relation)."""
    try:
        return [twin.caption() for twin in Scene.parse(text).twins()]
    except BadInput:
        pass
    found = [e for e in (_attributes_swapped(text), _sides_swapped(text)) if e and e != text]
    return list(dict.fromkeys(found))


def _attributes_swapped(text: str) -> str | None:
    words = text.split(" ")
    spots = [i for i, w in enumerate(words) if w.lower().strip(".,") in ATTRIBUTES]
    if len(spots) < 2 or words[spots[0]] == words[spots[1]]:
        return None
    a, b = spots[:2]
    words[a], words[b] = words[b], words[a]
    return " ".join(words)


def _sides_swapped(text: str) -> str | None:
    for relation in RELATIONS:
        match = re.search(rf"^(?P<left>.+?) {relation} (?P<right>.+?)(?P<end>[.!]?)$", text)
        if match:
            left, right = match["left"], match["right"]
            lead = ""
            for prefix in ("a photo of ", "a picture of "):  # keep the template's lead-in
                if left.startswith(prefix):
                    lead, left = prefix, left[len(prefix) :]
            return f"{lead}{right} {relation} {left}{match['end']}"
    return None
