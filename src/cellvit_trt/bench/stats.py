"""Latency statistics in trtexec's conventions (min/mean/median/p90/p95/p99/max/stdev, milliseconds)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

PERCENTILES = (90, 95, 99)


def summarize_ms(samples_s: Sequence[float]) -> dict[str, float]:
    """Summarise durations given in seconds; the result is in milliseconds. Empty input gives NaNs."""
    a = np.asarray(samples_s, dtype=np.float64) * 1e3
    if a.size == 0:
        return {k: float("nan") for k in ("min", "mean", "median", "p90", "p95", "p99", "max", "stdev")}
    out = {
        "min": float(a.min()),
        "mean": float(a.mean()),
        "median": float(np.median(a)),
    }
    for p in PERCENTILES:
        # trtexec reports the sample at the percentile rank (nearest rank, not interpolated).
        out[f"p{p}"] = float(np.percentile(a, p, method="higher"))
    out["max"] = float(a.max())
    out["stdev"] = float(a.std(ddof=0))
    return out
