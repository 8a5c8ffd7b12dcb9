"""Upper bounds on any indexer's images/s on a folder and machine, from its stages run alone."""

from __future__ import annotations


def machine_bounds(
    images: int,
    cores: int,
    decode_1_thread: float,
    decode_all_cores: float,
    ceiling: float,
    ceiling_threads: int,
) -> dict[str, float]:
    """Two generous bounds, in images/s: decoding alone on every core (as if embedding and
    start-up were free), and all CPU work shared perfectly over the cores with no start-up:
    one-thread decode time plus the image tower at `ceiling` images/s on `ceiling_threads`."""
    decode_cpu_s = images / decode_1_thread
    model_cpu_s = images / ceiling * ceiling_threads
    return {
        "decode_alone_all_cores_images_per_s": decode_all_cores,
        "decode_plus_model_at_ceiling_images_per_s": images * cores / (decode_cpu_s + model_cpu_s),
    }
