"""The indexing benchmark's markdown report, and the 5x target set against this machine's bounds."""

from __future__ import annotations

from lib.bounds import machine_bounds
from lib.cache import ARCH
from lib.tables import table

from indexing.model import BATCH


def target_bound(result: dict) -> dict:
    """What the 5x target asks against what this machine can give on this folder, from this run
    (the bounds: `lib.bounds.machine_bounds`, the tower at the bf16 matmul ceiling)."""
    fresh, decode, model = result["fresh_index"], result["decode"], result["model"]
    bounds = machine_bounds(
        fresh["photos"],
        result["environment"]["cpus"],
        decode["photoseek_decode_1_thread"]["images_per_s"],
        decode["photoseek_decode_2_threads"]["images_per_s"],
        model["bf16_matmul"]["ceiling_images_per_s"],
        model["torch_threads"],
    )
    return {"target_images_per_s": 5 * fresh["rclip"]["images_per_s"]} | bounds


def markdown(result: dict) -> str:
    env = result["environment"]
    lines = [
        f"`{result['command']}` — {env['cpu']}, {env['cpus']} CPUs, torch {env['torch']}, "
        f"rclip {env['rclip']} (onnxruntime {env['onnxruntime (rclip)']}); random weights.",
        "",
        *_fresh_table(result["fresh_index"]),
    ]
    decode, model = result.get("decode"), result.get("model")
    if decode or model:
        lines += ["", *_stages_table(decode, model)]
    if result.get("target_bound"):
        lines += ["", *_bound_table(result)]
    gate = env.get("quiet_gate")
    if gate and gate["max_wait_s"] > 0:
        lines += [
            "",
            f"Shared machine: each timed sample waited (up to {gate['max_wait_s']:.0f} s) for "
            f"other processes to use < {gate['threshold_cores']} cores; "
            f"{gate['samples_started_while_busy']} sample(s) started while they were busy.",
        ]
    reindex = result.get("reindex")
    if reindex:
        verdict = "meets" if reindex["meets_target"] else "MISSES"
        lines += [
            "",
            f"Re-index of an unchanged {reindex['images']:,}-image collection "
            f"(`photoseek index --index DIR`, median of {len(reindex['runs'])}): "
            f"**{reindex['wall_s_median']:.2f} s** wall ({reindex['own_seconds_median']:.2f} s "
            f"inside `run_index`), peak RSS {reindex['peak_rss_mb_median']:.0f} MB — "
            f"{verdict} the ≤ {reindex['target_wall_s']:.0f} s target.",
        ]
    return "\n".join(lines)


def _fresh_table(fresh: dict) -> list[str]:
    ours, theirs = fresh["photoseek"], fresh["rclip"]
    header = f"Fresh index of {fresh['photos']} photos (1-24 MP), median of {len(ours['runs'])}"
    rss, cpu = ours["peak_rss_mb_median"], ours["cpu_s_median"]
    their_rss, their_cpu = theirs["peak_rss_mb_median"], theirs["cpu_s_median"]
    outside = ours["wall_s_median"] - ours["own_seconds_median"]
    rows = [
        ["wall time, new process", f"{ours['wall_s_median']:.2f} s",
         f"{theirs['wall_s_median']:.2f} s", f"{fresh['ratio_wall_photoseek_over_rclip']:.2f}x"],
        ["images/s", f"{ours['images_per_s']:.2f}", f"{theirs['images_per_s']:.2f}",
         f"{fresh['ratio_images_per_s_photoseek_over_rclip']:.2f}x"],
        ["peak RSS", f"{rss:.0f} MB", f"{their_rss:.0f} MB", f"{rss / their_rss:.2f}x"],
        ["CPU time (user+sys)", f"{cpu:.1f} s", f"{their_cpu:.1f} s", f"{cpu / their_cpu:.2f}x"],
        ["CPU used by other processes meanwhile (shared machine)",
         f"{ours['others_cpu_s_median']:.1f} s", f"{theirs['others_cpu_s_median']:.1f} s", ""],
        ["photoseek's own `seconds` (inside `run_index`)",
         f"{ours['own_seconds_median']:.2f} s", "", ""],
        ["photoseek outside `run_index` (interpreter start, CLI, exit)", f"{outside:.2f} s",
         "", ""],
        ["rclip search alone (`-n`, part of each rclip run)", "",
         f"{theirs['search_only_wall_s']:.2f} s", ""],
        ["first run (photoseek exports its ONNX query towers once per model)",
         f"{ours['first_run_cold_tower_cache']['wall_s']:.2f} s",
         f"{theirs['first_run']['wall_s']:.2f} s", ""],
    ]  # fmt: skip
    return table([header, "photoseek", "rclip", "photoseek / rclip"], "lrrr", rows)


def _stages_table(decode: dict | None, model: dict | None) -> list[str]:
    rows = []
    if decode:
        for key, label in (
            ("photoseek_decode_1_thread", "photoseek decode to 256 px, 1 thread"),
            ("photoseek_decode_2_threads", "photoseek decode to 256 px, 2 threads"),
            ("pillow_full_decode_1_thread", "Pillow full decode (`convert('RGB')`), 1 thread"),
        ):
            rows.append([label, f"{decode[key]['images_per_s']:.1f}"])
    if model:
        f, mm, bf16 = model["flops"], model["bf16_matmul"], model["bf16"]
        rows += [
            [f"{ARCH} image tower, batch {BATCH}, fp32", f"{model['fp32']['images_per_s']:.1f}"],
            [f"{ARCH} image tower, batch {BATCH}, bf16", f"{bf16['images_per_s']:.1f}"],
            [f"bf16 matmul ceiling (best block GEMM {mm['bf16_gflop_per_s']:.0f} GFLOP/s "
             f"/ {f['gflops']:.1f} GFLOP per image)", f"{mm['ceiling_images_per_s']:.1f}"],
            [f"bf16 tower: {bf16['gflop_per_s']:.0f} GFLOP/s = "
             f"{100 * model['bf16_fraction_of_matmul_ceiling']:.0f}% of that ceiling "
             f"({100 * model['bf16_fraction_of_layer_gemm_ceiling']:.0f}% of its own GEMMs' "
             f"{mm['bf16_layer_gemms_gflop_per_s']:.0f} GFLOP/s)", ""],
        ]  # fmt: skip
    return table(["Stage alone (one process)", "images/s"], "lr", rows)


def _bound_table(result: dict) -> list[str]:
    bound, cpus = result["target_bound"], result["environment"]["cpus"]
    fresh = result["fresh_index"]
    rclip = fresh["rclip"]["images_per_s"]
    decode_alone = bound["decode_alone_all_cores_images_per_s"]
    at_ceiling = bound["decode_plus_model_at_ceiling_images_per_s"]
    rows = [
        ["5x rclip", f"{bound['target_images_per_s']:.1f}", "5.00x"],
        [f"bound: decoding alone on all {cpus} cores (embedding and start-up free)",
         f"{decode_alone:.1f}", f"{decode_alone / rclip:.2f}x"],
        ["bound: decode + image tower at the bf16 matmul ceiling, perfectly shared over the "
         "cores, no start-up", f"{at_ceiling:.1f}", f"{at_ceiling / rclip:.2f}x"],
        ["photoseek, measured", f"{fresh['photoseek']['images_per_s']:.1f}",
         f"{fresh['ratio_images_per_s_photoseek_over_rclip']:.2f}x"],
    ]  # fmt: skip
    header = ["The 5x target against this machine's bounds", "images/s", "x rclip"]
    return table(header, "lrr", rows)
