"""Part 2b: the image tower alone, fp32 and bf16, against the bf16 matmul ceiling of this CPU."""

from __future__ import annotations

import time

from lib.cache import ARCH
from lib.timing import QuietGate, interleaved, median

BATCH = 32


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


def bench_model(runs: int, gate: QuietGate) -> dict:
    import open_clip
    import torch

    torch.manual_seed(0)
    fp32 = open_clip.create_model(ARCH).eval()
    bf16 = open_clip.create_model(ARCH).eval().to(torch.bfloat16)
    x32 = torch.randn(BATCH, 3, 256, 256)
    x16 = x32.to(torch.bfloat16)
    flops = vit_gflops_per_image(ARCH)
    gemms = GemmSuite(flops["tokens"] * BATCH, flops["width"])
    with torch.inference_mode():
        for model, x in ((fp32, x32), (bf16, x16)):  # warm-up: oneDNN primitives, allocator
            model.encode_image(x)
        gemms()
        variants = {
            "fp32": lambda: fp32.encode_image(x32),
            "bf16": lambda: bf16.encode_image(x16),
            "bf16 GEMMs": gemms,  # interleaved, so background load hits it like the model
        }
        times = interleaved(variants, max(runs, 3), "model batch 32", gate)
    del times["bf16 GEMMs"]
    result: dict = {"batch": BATCH, "torch_threads": torch.get_num_threads(), "flops": flops}
    for name, t in times.items():
        ips = BATCH / median(t)
        result[name] = {
            "batch_seconds": t,
            "images_per_s": ips,
            "gflop_per_s": ips * flops["gflops"],
        }
    matmul = gemms.report()
    ceiling = matmul["bf16_gflop_per_s"] / flops["gflops"]
    result["bf16_matmul"] = matmul | {"ceiling_images_per_s": ceiling}
    result["bf16_fraction_of_matmul_ceiling"] = result["bf16"]["images_per_s"] / ceiling
    result["bf16_fraction_of_layer_gemm_ceiling"] = (
        result["bf16"]["gflop_per_s"] / matmul["bf16_layer_gemms_gflop_per_s"]
    )
    return result


class GemmSuite:
    """The four GEMMs of one transformer block at batch 32, in bf16, timed for a ceiling.

    qkv [BT,d]x[d,3d], out [BT,d]x[d,d], fc1 [BT,d]x[d,4d], fc2 [BT,4d]x[4d,d]. The ceiling is the
    best rate any of them reaches (what bf16 matmul allows on this CPU); the layer rate is what a
    block's GEMMs would take if each ran at its own best measured speed.
    """

    def __init__(self, rows: int, d: int, reps: int = 5) -> None:
        import torch

        self.reps = reps
        self.shapes = {"qkv": (rows, d, 3 * d), "out": (rows, d, d)}
        self.shapes |= {"fc1": (rows, d, 4 * d), "fc2": (rows, 4 * d, d)}
        self.operands = {
            name: (torch.randn(m, k, dtype=torch.bfloat16), torch.randn(k, n, dtype=torch.bfloat16))
            for name, (m, k, n) in self.shapes.items()
        }
        self.best: dict[str, float] = {}  # seconds per GEMM

    def __call__(self) -> None:
        for name, (a, b) in self.operands.items():
            for _ in range(self.reps):
                started = time.perf_counter()
                a @ b
                took = time.perf_counter() - started
                self.best[name] = min(took, self.best.get(name, took))

    def report(self) -> dict:
        flop = {name: 2 * m * k * n for name, (m, k, n) in self.shapes.items()}
        rate = {name: flop[name] / self.best[name] / 1e9 for name in flop}
        return {
            "shapes_m_k_n": self.shapes,
            "gflop_per_s_by_gemm": rate,
            "bf16_gflop_per_s": max(rate.values()),
            "bf16_layer_gemms_gflop_per_s": sum(flop.values()) / sum(self.best.values()) / 1e9,
        }
