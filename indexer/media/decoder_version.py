"""The decoder's version: recorded with each failed file, so a new decoder retries old failures.

A file that failed may read with a newer Pillow (a format it learned) or a newer photoseek (a
bug fixed in `decode`): the version names both, and a re-index retries any error recorded under
another version.
"""

from __future__ import annotations

import functools
from importlib import metadata

# Bump when `indexer.media.decode` starts reading files it used to reject.
DECODE_REVISION = 2
_LIBRARIES = ("pillow", "pillow-heif", "pyvips", "rawpy")


@functools.cache
def decoder_version() -> str:
    """e.g. 'photoseek-decode 2; pillow 11.0.0; pillow-heif 0.20.0; pyvips -; rawpy -'."""
    parts = [f"photoseek-decode {DECODE_REVISION}"]
    for name in _LIBRARIES:
        try:
            parts.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            parts.append(f"{name} -")
    return "; ".join(parts)
