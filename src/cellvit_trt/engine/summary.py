"""Readable lines about an engine from its sidecar alone (for `cellvit-trt build` and `cellvit-trt info`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cellvit_trt.engine.sidecar import read_sidecar


def summary_lines(sidecar: dict[str, Any]) -> list[str]:
    """What was built, for what, from what: graph model/precision, device, versions, I/O, attention."""
    meta = sidecar.get("metadata") or {}
    dev = sidecar.get("device") or {}
    ver = sidecar.get("versions") or {}
    build = sidecar.get("build") or {}
    settings = sidecar.get("settings") or {}
    lines = [
        f"model: {meta.get('model', '?')} ({meta.get('precision', '?')}, tile {build.get('tile_size', '?')})",
        f"built for: {dev.get('name', '?')} (SM {dev.get('compute_capability', '?')}, "
        f"{dev.get('sm_count', '?')} SMs), TensorRT {ver.get('tensorrt', '?')}, CUDA driver "
        f"{ver.get('cuda_driver', '?')} / runtime {ver.get('cuda_runtime', '?')}",
        f"batch: {settings.get('min_batch', '?')}..{settings.get('max_batch', '?')} "
        f"(opt {settings.get('opt_batch') or settings.get('max_batch', '?')}), "
        f"optimisation level {settings.get('optimization_level', '?')}",
    ]
    for t in sidecar.get("io", []):
        profile = f" profile {t['profile']}" if "profile" in t else ""
        lines.append(f"  {t['mode']:6s} {t['name']}: {t['dtype']}{t['shape']}{profile}")
    attention = build.get("attention") or {}
    if attention:
        verdict, blocks = attention.get("verdict"), attention.get("expected_blocks")
        lines.append(f"attention: {verdict} ({blocks} block(s) in the graph)")
    return lines


def describe_engine(path: str | Path) -> list[str]:
    """Summary of the engine at `path` (reads the sidecar; raises EngineCacheError if there is none)."""
    side = read_sidecar(path)
    return [
        f"engine: {path} ({side['engine']['size'] / 2**20:.1f} MiB, key {side['key'][:16]}…)"
    ] + summary_lines(side)
