"""Confidence intervals for the gated agreement figures, so a gate's verdict says how sure it is.

A gate on 4 tiles that measures cell_type_agreement 0.930 has not shown that the candidate agrees on 85 % of
cells: the next 12 tiles may bring it to 0.838. So every gated figure gets a two-sided interval (95 % by
default) and a lower bound (or, for an error, an upper bound) is what meets the threshold.

What is resampled: tiles. Pixels and cells within one tile are not independent (one tile is one tissue, one
stain, one region of the model's weak classes), so the unit of the bootstrap is the tile:
- pixel agreements (`fg_agreement`, `type_agreement`), mean errors (`hv_mean_abs`, `tokens_rel_mean_abs`),
  `f1` (pooled TP/FP/FN) and the per-tile means `bpq` / `mpq`: percentile bootstrap over tiles (the figure is
  recomputed from the resampled tiles' sums), B = 2000, seeded, so a verdict is reproducible;
- proportions of cells (`cell_type_agreement`): Wilson score interval on the effective number of cells, the
  matched cells divided by the design effect of their clustering in tiles (Kish: 1 + (m - 1) ICC, the
  intra-tile correlation estimated by one-way ANOVA); `tissue_argmax_agreement` (one trial per tile): Wilson;
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


def design_effect(successes: np.ndarray, trials: np.ndarray) -> float:
    """Kish's design effect 1 + (m - 1) ICC of a proportion measured in clusters (tiles); 1 for one tile."""
    k, m = np.asarray(successes, np.float64), np.asarray(trials, np.float64)
    keep = m > 0
    k, m = k[keep], m[keep]
    g, total = len(m), float(m.sum())
    if g < 2 or total <= g:
        return 1.0
    p_i, p = k / m, k.sum() / total
    msb = float((m * (p_i - p) ** 2).sum()) / (g - 1)
    msw = float((m * p_i * (1 - p_i)).sum()) / (total - g)
    m0 = (total - float((m * m).sum()) / total) / (g - 1)
    denom = msb + (m0 - 1) * msw
    icc = 0.0 if denom <= 0 else min(1.0, max(0.0, (msb - msw) / denom))
    return 1.0 + (float((m * m).sum()) / total - 1.0) * icc


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
        deff = design_effect(cols["agree"], cols["tp"])
        n_eff = float(cols["tp"].sum()) / deff
        p = float(cols["agree"].sum() / cols["tp"].sum())
        lo, hi = wilson(p * n_eff, n_eff, confidence)
        note = f"Wilson, {n_eff:.0f} effective cells of {int(cols['tp'].sum())} (design effect {deff:.1f})"
        if n < 2:
            note += "; one tile: clustering not measurable"
        out["cell_type_agreement"] = Interval(lo, hi, note)
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


def tiles_to_decide(interval: Interval, value: float, threshold: float, tiles: int, confidence: float) -> int:
    """Tiles at which an interval of this width would clear `threshold`, if the estimate held (sqrt-n law)."""
    margin = abs(value - threshold)
    half = (interval.high - interval.low) / 2
    if margin <= 0 or half <= 0 or tiles < 1:
        return 0
    return int(math.ceil(tiles * (half / margin) ** 2))
