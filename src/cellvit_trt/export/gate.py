"""Parity gate: a candidate runner (exported graph, engine, any backend) vs the PyTorch FP32 reference.

Both runners map uint8 tiles [N,H,W,3] to the deployment output dict (ARCHITECTURE.md). The gate compares
per output (pixel agreement of fg/type_map, HV and tissue-logit errors, token errors) and at cell level after
the same post-processing on both sides (bPQ/mPQ/F1 of the candidate's cells with the reference's as ground
truth, via `cellvit_trt.kernels` and `cellvit_trt.metrics.agreement`). Thresholds come from
`gate_thresholds.yaml` (`load_thresholds(precision)`), the one place they live, with the number of tiles each
precision's gate needs. Every gated figure gets a 95 % confidence interval over the tiles
(`cellvit_trt.metrics.intervals`); the bound on the wrong side of the interval must meet the threshold, so a
handful of lucky tiles cannot pass a candidate that a larger sample would fail.

    report = run_gate(reference, candidate, tiles, precision="fp16", magnification=40)
    report.raise_if_failed()        # GateError with the readable report
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from cellvit_trt.config import CONFIG_MAX_BYTES, parse_yaml
from cellvit_trt.errors import ConfigError, GateError, InputError
from cellvit_trt.metrics.intervals import CONFIDENCE, Interval, figure_intervals, tiles_to_decide

Runner = Any  # an object with .infer(images) -> dict, or a callable images -> dict
THRESHOLDS_FILE = "gate_thresholds.yaml"


@dataclass(frozen=True)
class Thresholds:
    precision: str
    min: dict[str, float]
    max: dict[str, float]
    recommended_tiles: int = 1  # fewer gate tiles than this: intervals too wide for a pass to mean much

    def check(
        self, metrics: dict[str, float], intervals: dict[str, Interval] | None = None
    ) -> tuple[list[str], list[str]]:
        """(failures, not_applicable). With `intervals`, the bound on the wrong side meets the threshold: the
        lower bound for a minimum, the upper bound for a maximum. An exactness requirement (a minimum of 1 or
        a maximum of 0) and a figure without an interval are checked as measured."""
        failures, skipped = [], []
        intervals = intervals or {}
        for bounds, ok, word, side in (
            (self.min, lambda v, t: v >= t, ">=", "low"),
            (self.max, lambda v, t: v <= t, "<=", "high"),
        ):
            for name, limit in bounds.items():
                value = metrics.get(name)
                if value is None:
                    continue
                if isinstance(value, float) and math.isnan(value):
                    skipped.append(name)
                    continue
                iv = intervals.get(name)
                exact = (side == "low" and limit >= 1.0) or (side == "high" and limit <= 0.0)
                bound = getattr(iv, side) if iv is not None and not exact else None
                if not ok(value, limit):
                    failures.append(f"{name} = {value:.6g}, required {word} {limit:g}")
                elif bound is not None and not math.isnan(bound) and not ok(bound, limit):
                    failures.append(
                        f"{name} = {value:.6g}, but its {'lower' if side == 'low' else 'upper'} "
                        f"{CONFIDENCE:.0%} bound {bound:.6g} is not {word} {limit:g} "
                        "(the sample is too small or too uneven to be sure)"
                    )
        return failures, skipped


def load_thresholds(precision: str, path: str | None = None) -> Thresholds:
    """Thresholds for `precision` ('fp32' | 'fp16' | 'int8') from gate_thresholds.yaml (or `path`)."""
    if path is None:
        text = resources.files("cellvit_trt.export").joinpath(THRESHOLDS_FILE).read_text()
        where = THRESHOLDS_FILE
    else:
        try:
            if Path(path).stat().st_size > CONFIG_MAX_BYTES:
                raise ConfigError(f"gate thresholds {path}: larger than the {CONFIG_MAX_BYTES} bytes allowed")
            text = Path(path).read_text()
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"gate thresholds {path}: cannot read ({exc})") from exc
        where = str(path)
    data = parse_yaml(text, f"gate thresholds {where}")
    if precision not in data:
        raise ConfigError(f"gate thresholds {where}: no section {precision!r}; have {sorted(data)}")
    sec = data[precision] or {}
    unknown = sorted(set(sec) - {"min", "max", "tiles"})
    if unknown:
        raise ConfigError(
            f"gate thresholds {where} [{precision}]: unknown keys {unknown}; expected 'min', 'max', 'tiles'"
        )
    tiles = sec.get("tiles", 1)
    if isinstance(tiles, bool) or not isinstance(tiles, int) or tiles < 1:
        raise ConfigError(
            f"gate thresholds {where} [{precision}]: tiles = {tiles!r}; expected an integer >= 1"
        )
    try:
        lo = {k: float(v) for k, v in (sec.get("min") or {}).items()}
        hi = {k: float(v) for k, v in (sec.get("max") or {}).items()}
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"gate thresholds {where} [{precision}]: values must be numbers ({exc})") from exc
    return Thresholds(precision, lo, hi, tiles)


@dataclass
class GateReport:
    precision: str
    metrics: dict[str, float]
    failures: list[str]
    not_applicable: list[str]
    thresholds: Thresholds
    tiles: int
    cells: dict[str, Any] = field(default_factory=dict)
    intervals: dict[str, Interval] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.failures

    def format(self) -> str:
        lines = [
            f"parity gate ({self.precision}, {self.tiles} tiles): {'PASSED' if self.passed else 'FAILED'}",
            f"  {'':5}{'figure':<26} {'value':<10} {f'{CONFIDENCE:.0%} interval':<22} threshold",
        ]
        for name, value in self.metrics.items():
            bound = ""
            if name in self.thresholds.min:
                bound = f">= {self.thresholds.min[name]:g}"
            elif name in self.thresholds.max:
                bound = f"<= {self.thresholds.max[name]:g}"
            iv = self.intervals.get(name)
            span = f"[{iv.low:.4g}, {iv.high:.4g}]" if iv is not None else ""
            mark = "FAIL " if any(f.startswith(f"{name} =") for f in self.failures) else "     "
            lines.append(f"  {mark}{name:<26} {value:<10.6g} {span:<22} {bound}".rstrip())
        if self.not_applicable:
            lines.append(f"  not gated (undefined on this sample): {', '.join(self.not_applicable)}")
        for f in self.failures:
            if "bound" in f:
                lines.append(f"  {f}")
        methods = sorted({iv.method for iv in self.intervals.values()})
        if methods:
            lines.append("  intervals: " + "; ".join(methods))
        lines += [f"  note: {n}" for n in self.notes]
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        def clean(v: float) -> float | None:
            return None if isinstance(v, float) and math.isnan(v) else v

        return {
            "precision": self.precision,
            "passed": self.passed,
            "tiles": self.tiles,
            "metrics": {k: clean(v) for k, v in self.metrics.items()},
            "intervals": {k: iv.to_dict() for k, iv in self.intervals.items()},
            "confidence": CONFIDENCE,
            "failures": self.failures,
            "not_applicable": self.not_applicable,
            "notes": self.notes,
            "cells": self.cells,
            "thresholds": {
                "min": self.thresholds.min,
                "max": self.thresholds.max,
                "recommended_tiles": self.thresholds.recommended_tiles,
            },
        }

    def raise_if_failed(self, what: str = "candidate") -> None:
        if not self.passed:
            raise GateError(f"{what} failed the {self.precision} parity gate:\n{self.format()}")


def sample_notes(
    thresholds: Thresholds, tiles: int, metrics: dict[str, float], intervals: dict[str, Interval]
) -> list[str]:
    """What the sample size means for the verdict: below the recommendation, and the tiles that would decide
    an undecided figure (from its interval's width, by the square-root law)."""
    notes = []
    if tiles < thresholds.recommended_tiles:
        notes.append(
            f"{tiles} tiles is below the {thresholds.recommended_tiles} recommended for a "
            f"{thresholds.precision} gate: the intervals are wide, so a pass is weak evidence"
        )
    for name, limit in thresholds.min.items():
        iv, value = intervals.get(name), metrics.get(name)
        if iv is None or value is None or math.isnan(value) or limit >= 1.0:
            continue
        if value >= limit > iv.low:
            need = tiles_to_decide(iv, value, limit, tiles)
            notes.append(f"{name}: about {need} tiles (this kind) would decide it, if {value:.4g} holds")
    return notes


def _call(runner: Runner) -> Callable[[np.ndarray], dict[str, np.ndarray]]:
    if hasattr(runner, "infer"):
        return runner.infer
    if callable(runner):
        return runner
    raise InputError(f"gate: a runner must have .infer(images) or be callable, got {type(runner).__name__}")


def collect(runner: Runner, tiles: np.ndarray, batch: int) -> dict[str, np.ndarray]:
    infer = _call(runner)
    parts: dict[str, list[np.ndarray]] = {}
    for start in range(0, len(tiles), batch):
        out = infer(np.ascontiguousarray(tiles[start : start + batch]))
        for k, v in out.items():
            parts.setdefault(k, []).append(np.asarray(v))
    return {k: np.concatenate(v) for k, v in parts.items()}


def output_metrics(ref: dict[str, np.ndarray], cand: dict[str, np.ndarray]) -> dict[str, float]:
    """Per-output comparison of two output dicts (contract names)."""
    return output_stats(ref, cand)[0]


def output_stats(ref: dict[str, np.ndarray], cand: dict[str, np.ndarray]) -> tuple[dict[str, float], Any]:
    """(metrics, OutputStats with one row per tile) of two output dicts [N, ...]."""
    from cellvit_trt.metrics.outputs import OutputStats

    for key in ("fg", "hv", "type_map", "tissue_logits"):
        if key not in cand or key not in ref:
            raise InputError(
                f"gate: output {key!r} missing from the {'candidate' if key not in cand else 'reference'}"
            )
        if cand[key].shape != ref[key].shape:
            raise InputError(
                f"gate: output {key!r} has shape {cand[key].shape} in the candidate, "
                f"{ref[key].shape} in the reference"
            )
    stats = OutputStats()
    tokens = "tokens" in ref and "tokens" in cand
    for i in range(len(ref["fg"])):
        stats.add_maps(
            {k: ref[k][i] for k in ("fg", "hv", "type_map")},
            {k: cand[k][i] for k in ("fg", "hv", "type_map")},
        )
        if tokens:
            stats.add_tokens(ref["tokens"][i], cand["tokens"][i])
    stats.add_tissue(ref["tissue_logits"], cand["tissue_logits"])
    m = stats.result()
    d = np.abs(ref["hv"].astype(np.float32) - cand["hv"].astype(np.float32))
    m["hv_p999_abs"] = float(np.quantile(d, 0.999))  # reported, not gated
    return m, stats


def cell_metrics(
    ref: dict[str, np.ndarray],
    cand: dict[str, np.ndarray],
    magnification: float,
    class_names: Sequence[str] | None,
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Post-process both sides identically and score the candidate's cells against the reference's;
    returns (agreement dict, per-tile columns for the intervals)."""
    from cellvit_trt.kernels import PostProcessor, PostProcessParams
    from cellvit_trt.metrics.agreement import agreement_evaluator, summarise
    from cellvit_trt.metrics.intervals import cell_tile_columns

    pp = PostProcessor(PostProcessParams.for_magnification(magnification))
    r_tiles = pp.process_batch(ref["fg"], ref["hv"].astype(np.float32), ref["type_map"])
    c_tiles = pp.process_batch(cand["fg"], cand["hv"].astype(np.float32), cand["type_map"])
    n_classes = len(class_names) if class_names else None
    ev = agreement_evaluator(
        c_tiles, r_tiles, num_classes=n_classes, class_names=class_names, magnification=magnification
    )
    return summarise(ev), cell_tile_columns(ev)


def run_gate(
    reference: Runner,
    candidate: Runner,
    tiles: np.ndarray,
    precision: str,
    *,
    batch: int = 2,
    magnification: float = 40.0,
    class_names: Sequence[str] | None = None,
    thresholds: Thresholds | None = None,
    cells: bool = True,
    reference_outputs: dict[str, np.ndarray] | None = None,
) -> GateReport:
    """Run both runners on `tiles` (uint8 [N,H,W,3]) and check the metrics against the thresholds."""
    tiles = np.asarray(tiles)
    if tiles.dtype != np.uint8 or tiles.ndim != 4 or tiles.shape[-1] != 3 or len(tiles) == 0:
        raise InputError(
            f"gate: tiles must be uint8 [N,H,W,3] with N >= 1, got {tiles.dtype}{list(tiles.shape)}"
        )
    thresholds = thresholds or load_thresholds(precision)
    ref = reference_outputs if reference_outputs is not None else collect(reference, tiles, batch)
    cand = collect(candidate, tiles, batch)
    metrics, stats = output_stats(ref, cand)
    columns = stats.tile_columns()
    cell_info: dict[str, Any] = {}
    if cells:
        a, cell_columns = cell_metrics(ref, cand, magnification, class_names)
        columns.update(cell_columns)
        for key in ("bpq", "mpq", "f1"):
            metrics[key] = float(a[key])
        metrics["cell_type_agreement"] = float(a["type_agreement"])
        cell_info = {
            "n_reference": a.get("n_reference"),
            "n_candidate": a.get("n_candidate"),
            "per_class": a.get("per_class"),
        }
    intervals = figure_intervals(columns, CONFIDENCE)
    failures, skipped = thresholds.check(metrics, intervals)
    notes = sample_notes(thresholds, len(tiles), metrics, intervals)
    return GateReport(
        precision, metrics, failures, skipped, thresholds, len(tiles), cell_info, intervals, notes
    )
