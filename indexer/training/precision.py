"""The numeric precision and attention kernels training and scoring run in."""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext

import torch


def autocast_dtype(precision: str, device: str) -> torch.dtype | None:
    """The autocast dtype for a precision name (None: fp32). On CUDA, "auto" trains in bf16
    where the GPU has it and in fp32 otherwise: fp16 would need loss scaling, which the
    training loop does not do."""
    from indexer.models.loading import resolve_precision

    chosen = resolve_precision(precision, device)
    if precision == "auto" and device.startswith("cuda"):
        chosen = "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    return {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[chosen]


def autocasting(device: str | torch.device, dtype: torch.dtype | None) -> torch.autocast:
    """Autocast to `dtype` on `device` for the block; a no-op when `dtype` is None (fp32)."""
    return torch.autocast(
        torch.device(device).type, dtype=dtype or torch.float32, enabled=dtype is not None
    )


def attention_kernels(device: str) -> AbstractContextManager[object]:
    """The attention kernels for training on `device`. On CPU, the plain matmul-softmax kernel:
    the fused (flash) one's backward is several times slower on these short sequences
    (measured here: whole training steps ran at twice the speed)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    return sdpa_kernel(SDPBackend.MATH) if device == "cpu" else nullcontext()
