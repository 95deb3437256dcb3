"""Parity gate: a candidate runner (exported graph, engine, any backend) vs the PyTorch FP32 reference.

Both runners map uint8 tiles [N,H,W,3] to the deployment output dict (ARCHITECTURE.md). The gate compares
per output (pixel agreement of fg/type_map, HV and tissue-logit errors, token errors) and at cell level after
the same post-processing on both sides (bPQ/mPQ/F1 of the candidate's cells with the reference's as ground
truth, via `cellvit_trt.kernels` and `cellvit_trt.metrics.agreement`). Thresholds come from
`gate_thresholds.yaml` (`load_thresholds(precision)`), the one place they live.

    report = run_gate(reference, candidate, tiles, precision="fp16", magnification=40)
    report.raise_if_failed()        # GateError with the readable report
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

import numpy as np
import yaml

from cellvit_trt.errors import ConfigError, GateError, InputError

Runner = Any  # an object with .infer(images) -> dict, or a callable images -> dict
THRESHOLDS_FILE = "gate_thresholds.yaml"


@dataclass(frozen=True)
class Thresholds:
    precision: str
    min: dict[str, float]
    max: dict[str, float]

    def check(self, metrics: dict[str, float]) -> tuple[list[str], list[str]]:
        """(failures, not_applicable) for the metrics present."""
        failures, skipped = [], []
        for bounds, ok, word in (
            (self.min, lambda v, t: v >= t, ">="),
            (self.max, lambda v, t: v <= t, "<="),
        ):
            for name, limit in bounds.items():
                value = metrics.get(name)
                if value is None:
                    continue
                if isinstance(value, float) and math.isnan(value):
                    skipped.append(name)
                elif not ok(value, limit):
                    failures.append(f"{name} = {value:.6g}, required {word} {limit:g}")
        return failures, skipped


def load_thresholds(precision: str, path: str | None = None) -> Thresholds:
    """Thresholds for `precision` ('fp32' | 'fp16' | 'int8') from gate_thresholds.yaml (or `path`)."""
    if path is None:
        text = resources.files("cellvit_trt.export").joinpath(THRESHOLDS_FILE).read_text()
        where = THRESHOLDS_FILE
    else:
        try:
            with open(path) as fh:
                text = fh.read()
        except OSError as exc:
            raise ConfigError(f"gate thresholds {path}: cannot read ({exc})") from exc
        where = str(path)
    data = yaml.safe_load(text) or {}
    if precision not in data:
        raise ConfigError(f"gate thresholds {where}: no section {precision!r}; have {sorted(data)}")
    sec = data[precision] or {}
    unknown = sorted(set(sec) - {"min", "max"})
    if unknown:
        raise ConfigError(
            f"gate thresholds {where} [{precision}]: unknown keys {unknown}; expected 'min', 'max'"
        )
    try:
        lo = {k: float(v) for k, v in (sec.get("min") or {}).items()}
        hi = {k: float(v) for k, v in (sec.get("max") or {}).items()}
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"gate thresholds {where} [{precision}]: values must be numbers ({exc})") from exc
    return Thresholds(precision, lo, hi)


@dataclass
class GateReport:
    precision: str
    metrics: dict[str, float]
    failures: list[str]
    not_applicable: list[str]
    thresholds: Thresholds
    tiles: int
    cells: dict[str, Any] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return not self.failures

    def format(self) -> str:
        lines = [
            f"parity gate ({self.precision}, {self.tiles} tiles): {'PASSED' if self.passed else 'FAILED'}"
        ]
        for name, value in self.metrics.items():
            bound = ""
            if name in self.thresholds.min:
                bound = f"  (>= {self.thresholds.min[name]:g})"
            elif name in self.thresholds.max:
                bound = f"  (<= {self.thresholds.max[name]:g})"
            mark = "FAIL " if any(f.startswith(f"{name} =") for f in self.failures) else "     "
            lines.append(f"  {mark}{name:<26} {value:.6g}{bound}")
        if self.not_applicable:
            lines.append(f"  not gated (undefined on this sample): {', '.join(self.not_applicable)}")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        def clean(v: float) -> float | None:
            return None if isinstance(v, float) and math.isnan(v) else v

        return {
            "precision": self.precision,
            "passed": self.passed,
            "tiles": self.tiles,
            "metrics": {k: clean(v) for k, v in self.metrics.items()},
            "failures": self.failures,
            "not_applicable": self.not_applicable,
            "cells": self.cells,
            "thresholds": {"min": self.thresholds.min, "max": self.thresholds.max},
        }

    def raise_if_failed(self, what: str = "candidate") -> None:
        if not self.passed:
            raise GateError(f"{what} failed the {self.precision} parity gate:\n{self.format()}")


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
    m: dict[str, float] = {}
    fg_r, fg_c = ref["fg"] > 0, cand["fg"] > 0
    m["fg_agreement"] = float((fg_r == fg_c).mean())
    inter, total = float((fg_r & fg_c).sum()), float(fg_r.sum() + fg_c.sum())
    m["fg_dice"] = 2 * inter / total if total else float("nan")
    m["type_agreement"] = float((ref["type_map"] == cand["type_map"]).mean())
    m["type_agreement_in_fg"] = (
        float((ref["type_map"] == cand["type_map"])[fg_r].mean()) if fg_r.any() else float("nan")
    )
    d = np.abs(ref["hv"].astype(np.float32) - cand["hv"].astype(np.float32))
    m["hv_max_abs"] = float(d.max())
    m["hv_mean_abs"] = float(d.mean())
    m["hv_p999_abs"] = float(np.quantile(d, 0.999))
    t = np.abs(ref["tissue_logits"].astype(np.float32) - cand["tissue_logits"].astype(np.float32))
    m["tissue_max_abs"] = float(t.max())
    m["tissue_argmax_agreement"] = float(
        (ref["tissue_logits"].argmax(1) == cand["tissue_logits"].argmax(1)).mean()
    )
    if "tokens" in ref and "tokens" in cand:
        r = ref["tokens"].astype(np.float32)
        e = np.abs(r - cand["tokens"].astype(np.float32))
        m["tokens_max_abs"] = float(e.max())
        m["tokens_rel_mean_abs"] = float(e.mean() / max(float(np.abs(r).mean()), 1e-12))
    return m


def cell_metrics(
    ref: dict[str, np.ndarray],
    cand: dict[str, np.ndarray],
    magnification: float,
    class_names: Sequence[str] | None,
) -> dict[str, Any]:
    """Post-process both sides identically and score the candidate's cells against the reference's."""
    from cellvit_trt.kernels import PostProcessor, PostProcessParams
    from cellvit_trt.metrics.agreement import agreement

    pp = PostProcessor(PostProcessParams.for_magnification(magnification))
    r_tiles = pp.process_batch(ref["fg"], ref["hv"].astype(np.float32), ref["type_map"])
    c_tiles = pp.process_batch(cand["fg"], cand["hv"].astype(np.float32), cand["type_map"])
    n_classes = len(class_names) if class_names else None
    return agreement(
        c_tiles, r_tiles, num_classes=n_classes, class_names=class_names, magnification=magnification
    )


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
    metrics = output_metrics(ref, cand)
    cell_info: dict[str, Any] = {}
    if cells:
        a = cell_metrics(ref, cand, magnification, class_names)
        for key in ("bpq", "mpq", "f1"):
            metrics[key] = float(a[key])
        metrics["cell_type_agreement"] = float(a["type_agreement"])
        cell_info = {
            "n_reference": a.get("n_reference"),
            "n_candidate": a.get("n_candidate"),
            "per_class": a.get("per_class"),
        }
    failures, skipped = thresholds.check(metrics)
    return GateReport(precision, metrics, failures, skipped, thresholds, len(tiles), cell_info)
