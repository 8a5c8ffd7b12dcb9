"""Typed errors raised by photoseek's libraries; the CLI turns each into one line and exit 2."""

from __future__ import annotations


class PhotoseekError(Exception):
    """Base class: an error a user can act on, with a one-line message."""


class IndexNotFound(PhotoseekError):
    """The index directory holds no photoseek index."""


class ModelMismatch(PhotoseekError):
    """An index is used with a model other than the one it was built with."""


class WeightsUnavailable(PhotoseekError):
    """Model weights cannot be loaded (offline and not cached, missing file, bad checkpoint)."""


class BadModelSpec(PhotoseekError):
    """A --model value that names no known architecture or source."""


class UnreadableImage(PhotoseekError):
    """A file that cannot be decoded as an image; the message is the recorded reason."""


class BadInput(PhotoseekError):
    """An argument that is out of range or malformed (paths, dates, counts)."""


class BadCaptioner(BadModelSpec):
    """A --captioner value that names no captioner (bad form, not a captioning model, no extra)."""
