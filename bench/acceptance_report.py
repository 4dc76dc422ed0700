"""The markdown of bench/gpu_acceptance.py: one row per result, the failed sections, and the
operator figures (streams at 30 FPS, peak memory, compile warm-up, recompiles / fallbacks)."""

from __future__ import annotations

import json


def operator_figures(results: dict) -> list[str]:
    """The figures an operator sizes a deployment with, from the sections that ran."""
    lines = []
    for key, what in (("serving", "eager"), ("serving_compiled", "compiled")):
        rows = [
            r
            for r in results.get(key, [])
            if r["max_batch"] == max(r2["max_batch"] for r2 in results[key])
        ]
        # Streams that each get 30 FPS (from unpaced aggregate throughput; p95 of that row).
        fits = [r for r in rows if r["aggregate_fps"] >= 30 * r["sessions"]]
        if rows:
            best = max(fits, key=lambda r: r["sessions"]) if fits else None
            lines.append(
                f"| streams at 30 FPS ({what}, {results['machine'].get('precision', '')}) | "
                + (
                    f"{best['sessions']} (p95 {best['latency_p95_ms']} ms)"
                    if best
                    else f"< 1 ({max(r['per_session_fps'] for r in rows)} FPS for 1 stream)"
                )
                + " |"
            )
    if "memory" in results:
        lines.append(f"| peak memory | {results['memory']['peak']} {results['memory']['unit']} |")
    for row in results.get("compiled", [])[:1]:
        lines.append(
            f"| compile warm-up | {row['compile_warmup_s']} s "
            f"(complete: {row['warmup_complete']}) |"
        )
    if results.get("compiled"):
        recompiles = sum(r["recompiles_after_warmup"] for r in results["compiled"])
        fallbacks = sorted({f for r in results["compiled"] for f in r["fallbacks"]})
        lines.append(f"| recompiles / fallbacks over varied batches | {recompiles} / {fallbacks} |")
    return lines


def markdown(results: dict) -> str:
    lines = [
        f"GPU acceptance ({results['machine'].get('gpu', results['machine']['cpu'])}, "
        f"{results['machine']['date']}, config {results['args']['config']})",
        "",
        "| section | result |",
        "| --- | --- |",
    ]
    for key in ("fidelity_image", "fidelity_video", "bf16", "bf16_video", "latency", "memory"):
        if key in results:
            lines.append(f"| {key} | `{json.dumps(results[key])}` |")
    for row in results.get("compiled", []):
        lines.append(
            f"| compiled ({results['args']['backend']}), {row['objects']} objects | "
            f"eager {row['eager_fps']} fps, compiled {row['compiled_fps']} fps, warm-up "
            f"{row['compile_warmup_s']} s, recompiles {row['recompiles_after_warmup']}, "
            f"fallbacks {row['fallbacks']} |"
        )
    for key in ("serving", "serving_compiled"):
        for row in results.get(key, []):
            lines.append(
                f"| {key}: {row['sessions']} streams, max_batch {row['max_batch']} | "
                f"{row['aggregate_fps']} fps aggregate, p95 {row['latency_p95_ms']} ms |"
            )
    for row in results.get("official", []):
        lines.append(
            f"| official VOS, {row['objects']} objects ({row['precision']}) | ours "
            f"{row['ours_fps']} fps vs official {row['official_fps']} fps (x{row['fps_ratio']}), "
            f"min mask IoU {row['min_mask_iou']}, peak MiB {row.get('ours_peak_mib')} vs "
            f"{row.get('official_peak_mib')} |"
        )
    for name, error in results.get("errors", {}).items():
        lines.append(f"| {name} FAILED | `{error['error']}` |")
    lines += ["", "Operator figures", "", "| figure | value |", "| --- | --- |"]
    lines += operator_figures(results)
    return "\n".join(lines) + "\n"
