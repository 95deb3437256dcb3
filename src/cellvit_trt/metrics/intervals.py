"""Confidence intervals for the gated agreement figures, so a gate's verdict says how sure it is.

A gate on 4 tiles that measures cell_type_agreement 0.930 has not shown that the candidate agrees on 85 % of
cells: the next 12 tiles may bring it to 0.838. So every gated figure gets a two-sided interval (95 % by
default) and a lower bound (or, for an error, an upper bound) is what meets the threshold.

What is resampled: tiles. Pixels and cells within one tile are not independent (one tile is one tissue, one
stain, one region of the model's weak classes), so the unit of the bootstrap is the tile:
- pixel agreements (`fg_agreement`, `type_agreement`), mean errors (`hv_mean_abs`, `tokens_rel_mean_abs`),
  `f1` (pooled TP/FP/FN) and the per-tile means `bpq` / `mpq`: percentile bootstrap over tiles (the figure is
  recomputed from the resampled tiles' sums), B = 2000, seeded, so a verdict is reproducible;
- the proportion of matched cells with the same class (`cell_type_agreement`): the wider of two intervals,
  the bootstrap over tiles (it sees tiles that disagree with each other, the clustering that made 4 tiles
  read 0.930 and 16 read 0.838) and Wilson's score interval on the matched cells (it sees too few cells: a
  bootstrap of tiles that all agree perfectly is [1, 1], whatever their number);
  `tissue_argmax_agreement` (one trial per tile): Wilson;
- the worst case on the sample (`*_max_abs`) has no interval: it is checked as measured.
With one tile there is no between-tile variation to measure: no interval, and the verdict says so.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from statistics import NormalDist
from typing import Any

import numpy as np

CONFIDENCE = 0.95
BOOTSTRAP_SAMPLES = 2000


@dataclass(frozen=True)
class Interval:
    low: float
    high: float
    method: str  # "bootstrap over N tiles" | "Wilson, n_eff cells" | ...

    def to_dict(self) -> dict[str, Any]:
        return {"low": _clean(self.low), "high": _clean(self.high), "method": self.method}


def _clean(v: float) -> float | None:
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else float(v)


def z_value(confidence: float = CONFIDENCE) -> float:
    return NormalDist().inv_cdf(0.5 + confidence / 2)


def wilson(successes: float, n: float, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Wilson score interval of a proportion (n may be an effective, non-integer sample size)."""
    if n <= 0:
        return float("nan"), float("nan")
    z = z_value(confidence)
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1), np.nan)


def _nanmean_rows(x: np.ndarray) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(x, axis=-1)


# figure -> (per-tile columns it needs, estimator over arrays [..., tiles]); the estimator works on one
# sample ([tiles]) and on B resamples at once ([B, tiles])
def _sums(num: str, den: str):
    return (num, den), lambda c: _ratio(c[num].sum(-1), c[den].sum(-1))


BOOTSTRAPPED = {
    "fg_agreement": _sums("fg_equal", "px"),
    "type_agreement": _sums("type_equal", "px"),
    "hv_mean_abs": _sums("hv_sum", "hv_n"),
    "tokens_rel_mean_abs": _sums("tokens_abs_sum", "tokens_ref_abs_sum"),
    "bpq": (("bpq",), lambda c: _nanmean_rows(c["bpq"])),
    "mpq": (("mpq",), lambda c: _nanmean_rows(c["mpq"])),
    "cell_type_agreement": _sums("agree", "tp"),
    "f1": (
        ("tp", "fp", "fn"),
        lambda c: _ratio(2 * c["tp"].sum(-1), 2 * c["tp"].sum(-1) + c["fp"].sum(-1) + c["fn"].sum(-1)),
    ),
}


def figure_intervals(
    tiles: dict[str, np.ndarray],
    confidence: float = CONFIDENCE,
    samples: int = BOOTSTRAP_SAMPLES,
    seed: int = 0,
) -> dict[str, Interval]:
    """Intervals of every figure whose per-tile columns are in `tiles` (arrays, one value per tile)."""
    cols = {k: np.asarray(v, np.float64) for k, v in tiles.items()}
    n = min((len(v) for v in cols.values()), default=0)
    out: dict[str, Interval] = {}
    if n >= 2:
        idx = np.random.default_rng(seed).integers(0, n, size=(samples, n))
        lo_q, hi_q = 100 * (0.5 - confidence / 2), 100 * (0.5 + confidence / 2)
        for name, (needs, estimate) in BOOTSTRAPPED.items():
            if not all(k in cols for k in needs):
                continue
            values = estimate({k: cols[k][idx] for k in needs})
            values = values[~np.isnan(values)]
            if len(values) < samples // 2:  # undefined on most resamples (e.g. no cells)
                continue
            lo, hi = np.percentile(values, [lo_q, hi_q])
            out[name] = Interval(float(lo), float(hi), f"bootstrap over {n} tiles")
    if n >= 1 and "agree" in cols and "tp" in cols and cols["tp"].sum() > 0:
        cells = float(cols["tp"].sum())
        lo, hi = wilson(float(cols["agree"].sum()), cells, confidence)
        boot = out.get("cell_type_agreement")
        method = f"Wilson on {int(cells)} matched cells"
        if boot is not None:
            lo, hi = min(lo, boot.low), max(hi, boot.high)
            method += f" or bootstrap over {n} tiles, the wider"
        out["cell_type_agreement"] = Interval(lo, hi, method)
    if n >= 1 and "tissue_equal" in cols and cols["tissue_n"].sum() > 0:
        lo, hi = wilson(float(cols["tissue_equal"].sum()), float(cols["tissue_n"].sum()), confidence)
        out["tissue_argmax_agreement"] = Interval(lo, hi, f"Wilson, {int(cols['tissue_n'].sum())} tiles")
    return out


def cell_tile_columns(evaluator: Any) -> dict[str, np.ndarray]:
    """Per-tile columns of an agreement `Evaluator` (the reference as truth): bpq, mpq, tp, fp, fn, agree."""
    det = evaluator.detection
    return {
        "bpq": np.array([s.bpq for s in evaluator.images], np.float64),
        "mpq": np.array([s.mpq for s in evaluator.images], np.float64),
        "tp": np.array([len(a) for a in det.paired_true], np.float64),
        "fp": np.array([len(a) for a in det.unpaired_pred], np.float64),
        "fn": np.array([len(a) for a in det.unpaired_true], np.float64),
        "agree": np.array(
            [int((a == b).sum()) for a, b in zip(det.paired_true, det.paired_pred, strict=True)], np.float64
        ),
    }


def tiles_to_decide(interval: Interval, value: float, threshold: float, tiles: int) -> int:
    """Tiles at which the interval's lower side (value - low) would shrink to the margin over `threshold`, if
    the estimate held (the square-root law)."""
    margin, below = value - threshold, value - interval.low
    if margin <= 0 or below <= 0 or tiles < 1:
        return 0
    return int(math.ceil(tiles * (below / margin) ** 2))
