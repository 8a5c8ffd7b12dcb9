"""Part 2b: the image tower alone, fp32 and bf16, against the bf16 matmul ceiling of this CPU."""

from __future__ import annotations

from lib.cache import ARCH
from lib.gemm import GemmSuite, vit_gflops_per_image
from lib.timing import QuietGate, interleaved, median

BATCH = 32


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
