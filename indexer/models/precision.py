"""The precision `--precision auto` means on this machine, from what its CPU can do.

The CPU's features are read as its operating system lists them: Linux in /proc/cpuinfo, macOS
in sysctl. Elsewhere (Windows) nothing is read and the CPU is taken to have no native bf16, so
torch towers run fp32 there under `auto`: a wrong guess costs speed, never correctness.
"""

from __future__ import annotations

import platform
import subprocess
from pathlib import Path

from indexer.errors import BadModelSpec

PRECISIONS = ("auto", "fp32", "bf16", "fp16", "int8")


def resolve_precision(
    precision: str, device: str, *, int8: bool = False, native_bf16: bool | None = None
) -> str:
    """The precision `auto` means here: fp16 on CUDA; on a CPU, int8 when the caller can run
    it (`int8`: the indexer's ONNX engine), else bf16 where the CPU has native bf16
    (AVX512-BF16/AMX), else fp32. `native_bf16` None: ask the CPU.

    The int8 engine comes first even on a CPU with native bf16: there it embeds as fast as
    torch's bf16 tower, starts without torch and indexes a camera roll faster in half the
    memory (bench/precision_bench.py, bench/camera_roll.py), within the same quality bars.
    """
    if precision not in PRECISIONS:
        raise BadModelSpec(
            f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}"
        )
    if precision == "int8" and not int8:
        raise BadModelSpec("int8 is an indexing precision (the ONNX engine); use fp32 or bf16")
    if precision != "auto":
        return precision
    if device.startswith("cuda"):
        return "fp16"
    if int8 and device == "cpu":
        return "int8"
    return "bf16" if (cpu_has_native_bf16() if native_bf16 is None else native_bf16) else "fp32"


def cpu_has_native_bf16() -> bool:
    """Whether this CPU multiplies bf16 natively: AVX512-BF16 or AMX-BF16 among its features."""
    return native_bf16_in(cpu_features())


def native_bf16_in(features: frozenset[str]) -> bool:
    """Whether CPU feature names (lower case, as `cpu_features` gives them) include native bf16
    matmul. Linux spells them avx512_bf16 / amx_bf16, macOS's sysctl AVX512BF16 / AMX_BF16."""
    return bool({f.replace("_", "") for f in features} & {"avx512bf16", "amxbf16"})


def cpu_features() -> frozenset[str]:
    """This CPU's feature flags, lower case, as the operating system lists them; empty where
    it lists none (Windows and others: torch's bf16 there is taken to be emulated)."""
    system = platform.system()
    if system == "Linux":
        try:
            text = Path("/proc/cpuinfo").read_text()
        except OSError:
            return frozenset()
        lines = (ln for ln in text.splitlines() if ln.startswith(("flags", "Features")))
        return frozenset(f for ln in lines for f in ln.partition(":")[2].lower().split())
    if system == "Darwin":
        # Intel Macs list x86 features here (none has AVX512-BF16); Apple silicon lists none,
        # and torch's CPU bf16 there is not faster than fp32.
        keys = ["machdep.cpu.features", "machdep.cpu.leaf7_features"]
        try:
            done = subprocess.run(
                ["sysctl", "-n", *keys], capture_output=True, text=True, check=False
            )
        except OSError:
            return frozenset()
        return frozenset(done.stdout.lower().split())
    return frozenset()
