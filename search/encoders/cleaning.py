"""open_clip's text cleaning before tokenizing ("lower", "whitespace", "canonicalize"; "none" for
a transformers model), without torch or open_clip: a query must be cleaned exactly as the
model's own tokenizer cleans it."""

from __future__ import annotations

import html
import re
import string
from collections.abc import Callable

_PLAIN = re.compile(r"[ -%'-~]*")  # printable ASCII without '&' (which ftfy may unescape)
_PUNCTUATION = str.maketrans("", "", string.punctuation)


def _basic(text: str) -> str:
    """Fix mojibake and unescape HTML twice, as open_clip's basic_clean does."""
    if not _PLAIN.fullmatch(text):  # ftfy leaves plain printable ASCII alone; skip its import
        import ftfy

        text = ftfy.fix_text(text)
    return html.unescape(html.unescape(text)).strip()


def _whitespace(text: str) -> str:
    return " ".join(_basic(text).split())


def _lower(text: str) -> str:
    return _whitespace(text).lower()


def _canonicalize(text: str) -> str:
    """big_vision's canonical text, as SigLIP's tokenizer sees it: no ASCII punctuation,
    underscores as spaces, lower case, single spaces."""
    text = _basic(text).replace("_", " ").translate(_PUNCTUATION).lower()
    return " ".join(text.split())


CLEANERS: dict[str, Callable[[str], str]] = {
    "lower": _lower,
    "whitespace": _whitespace,
    "canonicalize": _canonicalize,
    "none": str,  # a transformers model's tokenizer: its own normaliser is all the cleaning
}
