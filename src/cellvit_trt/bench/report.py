"""Bench report: a terminal table (trtexec-like), a JSON file and a PNG chart of the stage breakdown."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cellvit_trt.io import atomic_path, write_json

LAT_KEYS = ("min", "mean", "median", "p90", "p95", "p99", "max")


def _lat_row(name: str, d: dict[str, float]) -> str:
    return f"  {name:<24}" + " ".join(f"{d.get(k, float('nan')):>9.2f}" for k in LAT_KEYS)


def format_table(r: dict[str, Any]) -> str:
    b = r["backend"]
    lines = [
        f"cellvit-trt bench: {r['model']}",
        f"  backend {b.get('backend')}  precision {r.get('precision')}  batch {r['compute']['batch']}  "
        f"tile {r['compute']['tile_size']}  device {r['environment'].get('device', 'cpu')}",
        "",
        "Backend (inference only, synchronous batches)",
        f"  throughput: {r['compute']['tiles_per_s']:.2f} tiles/s, "
        f"{r['compute']['megapixels_per_s']:.1f} Mpx/s "
        f"({r['compute']['batches']} batches in {r['compute']['wall_s']:.1f} s)",
        f"  {'latency per batch (ms)':<24}" + " ".join(f"{k:>9}" for k in LAT_KEYS),
        _lat_row("host (end to end)", r["compute"]["latency_ms"]),
    ]
    for phase, d in r["compute"].get("phases_ms", {}).items():
        lines.append(_lat_row(f"{phase} (device)", d))
    post = r.get("postprocess") or []
    if post:
        lines += ["", "Post-processing (Numba kernels)"]
        for p in post:
            lines.append(
                f"  {p['threads']} thread(s): {p['tiles_per_s']:.2f} tiles/s "
                f"({p['ms_per_tile']:.1f} ms per tile per thread, {p['cells_per_tile']:.0f} cells/tile)"
            )
    e2e = r.get("end_to_end")
    if e2e:
        t = e2e["timing"]
        lines += [
            "",
            f"End to end ({e2e['input']}, {t['tiles']} tiles)",
            f"  throughput: {t['tiles_per_s']:.2f} tiles/s; backend waited for input "
            f"{100 * t['backend_wait_fraction']:.1f}% of its time, "
            f"{t.get('backend_wait_output_s', 0.0):.2f} s blocked by post-processing",
            "  busy seconds per stage: " + ", ".join(f"{k} {v:.2f}" for k, v in t["stage_busy_s"].items()),
        ]
        if e2e.get("latency_ms"):
            lines.append(f"  {'tile latency (ms)':<24}" + " ".join(f"{k:>9}" for k in LAT_KEYS))
            lines.append(_lat_row("read → cells", e2e["latency_ms"]))
    proj = r.get("projection")
    if proj:
        lines += [
            "",
            f"Projection: {proj['minutes_per_slide']:.1f} min per slide "
            f"({proj['tissue_area_mm2']:.0f} mm² of tissue at {proj['mpp']} mpp = {proj['tiles']:.0f} tiles "
            f"at stride {proj['stride']}, at the {proj['basis']} rate)",
        ]
    mem = r.get("memory", {})
    lines += [
        "",
        f"Peak host RSS {mem.get('peak_host_rss_mb', float('nan')):.0f} MiB, peak device memory "
        + (
            f"{mem['peak_device_mb']:.0f} MiB"
            if mem.get("peak_device_mb") is not None
            else "n/a (no GPU backend)"
        ),
    ]
    env = r["environment"]
    lines.append("Versions: " + ", ".join(f"{k} {v}" for k, v in env.get("versions", {}).items()))
    return "\n".join(lines)


def write_chart(r: dict[str, Any], path: str | Path) -> bool:
    """Horizontal bar chart of busy seconds per stage (and device phases); False if matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    e2e = r.get("end_to_end")
    stages: dict[str, float] = {}
    if e2e:
        tiles = max(1, e2e["timing"]["tiles"])
        stages = {k: 1e3 * v / tiles for k, v in e2e["timing"]["stage_busy_s"].items()}
        stages.update(
            {f"backend phase: {k}": 1e3 * v / tiles for k, v in e2e["timing"].get("device_s", {}).items()}
        )
    else:
        c = r["compute"]
        stages = {"infer (host)": c["latency_ms"]["mean"] / c["batch"]}
        stages.update(
            {f"backend phase: {k}": d["mean"] / c["batch"] for k, d in c.get("phases_ms", {}).items()}
        )
        for p in r.get("postprocess") or []:
            if p["threads"] == 1:
                stages["post (1 thread)"] = p["ms_per_tile"]
    fig, ax = plt.subplots(figsize=(7, 0.45 * len(stages) + 1.2))
    names = list(stages)[::-1]
    ax.barh(names, [stages[n] for n in names], color="#3b7dd8")
    ax.set_xlabel("busy ms per tile (summed over threads)")
    ax.set_title(f"cellvit-trt bench: {Path(str(r['model'])).name} ({r['backend'].get('backend')})")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    return True


def write_report(r: dict[str, Any], json_path: str | Path | None, chart_path: str | Path | None) -> None:
    if json_path:
        write_json(json_path, r)
    if chart_path:
        write_chart(r, chart_path)
