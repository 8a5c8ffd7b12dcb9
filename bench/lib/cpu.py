"""What the CPU offers the image tower, named beside a figure: its model, cores, native bf16."""

from __future__ import annotations

import os

from lib.machine import cpu_model

# Integer dot-product features that int8 GEMMs use where a CPU has them.
_INT8_FEATURES = frozenset({"avx_vnni", "avx512_vnni", "amx_int8"})


def cpu_facts() -> dict:
    """Model name, logical cores, native bf16 (as photoseek's `--precision auto` reads it) and
    the int8 dot-product features, with a one-line label for tables."""
    from indexer.models.precision import cpu_features, native_bf16_in

    features = cpu_features()
    bf16 = native_bf16_in(features)
    cores = os.cpu_count() or 1
    name = cpu_model()
    return {
        "model": name,
        "cores": cores,
        "native_bf16": bf16,
        "int8_features": sorted(features & _INT8_FEATURES),
        "label": f"{name}, {cores} cores, {'native bf16' if bf16 else 'no native bf16'}",
    }
