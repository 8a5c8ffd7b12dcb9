"""The image tower's arithmetic, and the matmul ceiling of a precision on this CPU.

No indexer can embed faster than its GEMMs run: the ceiling here is the best rate this CPU
reaches on the GEMMs of one transformer block, in the precision the tower runs in.
"""

from __future__ import annotations

import time

# Precisions a ceiling can be measured in; int8 is what ONNX Runtime's quantised graphs compute.
CEILING_PRECISIONS = ("fp32", "bf16", "fp16", "int8")


def vit_gflops_per_image(arch: str) -> dict:
    """Image-tower GFLOPs: 12 x (4d^2T + 2T^2d + 8d^2T) multiply-adds x 2, plus patch embedding."""
    import open_clip

    cfg = open_clip.get_model_config(arch)["vision_cfg"]
    d, layers, patch = cfg["width"], cfg["layers"], cfg["patch_size"]
    grid = cfg["image_size"] // patch
    tokens = grid * grid + 1
    blocks = layers * (4 * d * d * tokens + 2 * tokens * tokens * d + 8 * d * d * tokens)
    patch_embed = grid * grid * 3 * patch * patch * d
    projection = d * open_clip.get_model_config(arch)["embed_dim"]
    return {
        "width": d,
        "tokens": tokens,
        "layers": layers,
        "gflops": 2 * (blocks + patch_embed + projection) / 1e9,
    }


class GemmSuite:
    """The four GEMMs of one transformer block, in one precision, timed for a ceiling.

    qkv [BT,d]x[d,3d], out [BT,d]x[d,d], fc1 [BT,d]x[d,4d], fc2 [BT,4d]x[4d,d]. The ceiling is the
    best rate any of them reaches (what matmul in that precision allows on this CPU); the layer
    rate is what a block's GEMMs would take if each ran at its own best measured speed. int8 runs
    `torch._int_mm` (int8 x int8 -> int32, oneDNN's VNNI/AMX kernels where the CPU has them).
    """

    def __init__(self, rows: int, d: int, reps: int = 5, precision: str = "bf16") -> None:
        import torch

        if precision not in CEILING_PRECISIONS:
            raise ValueError(f"no matmul ceiling for {precision!r}")
        self.reps = reps
        self.precision = precision
        self.shapes = {"qkv": (rows, d, 3 * d), "out": (rows, d, d)}
        self.shapes |= {"fc1": (rows, d, 4 * d), "fc2": (rows, 4 * d, d)}
        self.operands = {
            name: (_operand(torch, precision, m, k), _operand(torch, precision, k, n))
            for name, (m, k, n) in self.shapes.items()
        }
        self._matmul = torch._int_mm if precision == "int8" else torch.matmul
        self.best: dict[str, float] = {}  # seconds per GEMM

    def __call__(self) -> None:
        for name, (a, b) in self.operands.items():
            for _ in range(self.reps):
                started = time.perf_counter()
                self._matmul(a, b)
                took = time.perf_counter() - started
                self.best[name] = min(took, self.best.get(name, took))

    def report(self) -> dict:
        flop = {name: 2 * m * k * n for name, (m, k, n) in self.shapes.items()}
        rate = {name: flop[name] / self.best[name] / 1e9 for name in flop}
        p = self.precision
        return {
            "shapes_m_k_n": self.shapes,
            "gflop_per_s_by_gemm": rate,
            f"{p}_gflop_per_s": max(rate.values()),
            f"{p}_layer_gemms_gflop_per_s": sum(flop.values()) / sum(self.best.values()) / 1e9,
        }


def _operand(torch, precision: str, rows: int, cols: int):  # noqa: ANN001, ANN202 - torch types
    if precision == "int8":
        return torch.randint(-128, 128, (rows, cols), dtype=torch.int8)
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    return torch.randn(rows, cols, dtype=dtype)
