"""The `validate` report (`ValidationReport`) and terminal tables for it and for `Evaluator` results."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from cellvit_trt.errors import GateError


def _f(v: Any, digits: int = 4) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    if isinstance(v, int):
        return str(v)
    return f"{v:.{digits}f}" if abs(v) >= 1e-3 or v == 0 else f"{v:.2e}"


def _delta(a: Any, b: Any) -> str:
    if a is None or b is None:
        return "-"
    return f"{b - a:+.4f}"


def format_evaluation(res: dict, title: str = "metrics") -> str:
    """One Evaluator result as a table (dataset, per class, per tissue)."""
    d = res["dataset"]
    lines = [f"{title} ({d['images']} images)"]
    for key in ("bPQ", "mPQ", "mPQ+", "f1", "precision", "recall", "dice"):
        lines.append(f"  {key:<24}{_f(d[key])}")
    if "tissue_averaged" in res:
        ta = res["tissue_averaged"]
        lines.append(f"  {'bPQ (tissue-averaged)':<24}{_f(ta['bPQ'])}")
        lines.append(f"  {'mPQ (tissue-averaged)':<24}{_f(ta['mPQ'])}")
    lines.append(f"  {'class':<16}{'PQ':>8}{'PQ+':>8}{'F1':>8}{'n':>8}")
    for name, v in res["per_class"].items():
        lines.append(f"  {name:<16}{_f(v['pq']):>8}{_f(v['pq_plus']):>8}{_f(v['f1']):>8}{v['n_true']:>8}")
    return "\n".join(lines)


def format_report(rep: Any) -> str:
    status = "PASSED" if rep.passed else "FAILED"
    out = [
        f"validate {rep.candidate} vs {rep.reference}: {rep.precision}, {rep.tiles} tiles of {rep.data}: "
        f"{status}"
    ]
    intervals = getattr(rep, "intervals", {}) or {}
    out.append(f"  {'agreement with the FP32 reference':<34}{'value':>12}   {'95% interval':<22}bound")
    for name, value in rep.metrics.items():
        bound = ""
        if name in rep.thresholds["min"]:
            bound = f">= {rep.thresholds['min'][name]:g}"
        elif name in rep.thresholds["max"]:
            bound = f"<= {rep.thresholds['max'][name]:g}"
        iv = intervals.get(name)
        span = f"[{_f(iv.low, 4)}, {_f(iv.high, 4)}]" if iv is not None else ""
        mark = "FAIL" if any(f.startswith(f"{name} =") for f in rep.failures) else "    "
        out.append(f"{mark}  {name:<32}{_f(value, 6):>12}   {span:<22}{bound}".rstrip())
    for f in rep.failures:
        if "bound" in f:
            out.append(f"  {f}")
    if intervals:
        out.append("  intervals: " + "; ".join(sorted({iv.method for iv in intervals.values()})))
    d = rep.agreement["dataset"]
    out.append(
        f"  cells: reference {d['tp'] + d['fn']}, candidate {d['tp'] + d['fp']}, matched {d['tp']} "
        f"(precision {_f(d['precision'])}, recall {_f(d['recall'])}, mean centroid shift "
        f"{_f(d['mean_centroid_distance'], 3)} px)"
    )
    if rep.not_applicable:
        out.append(f"  not gated (undefined on these tiles): {', '.join(rep.not_applicable)}")
    if rep.ground_truth:
        r, c = rep.ground_truth["reference"], rep.ground_truth["candidate"]
        out.append(f"  {'against ground truth':<26}{'reference':>11}{'candidate':>11}{'delta':>10}")
        rows = [
            (k, r["dataset"][k], c["dataset"][k]) for k in ("bPQ", "mPQ", "mPQ+", "f1", "precision", "recall")
        ]
        if "tissue_averaged" in r:
            rows += [
                (f"{k} (tissue-avg)", r["tissue_averaged"][k], c["tissue_averaged"][k])
                for k in ("bPQ", "mPQ")
            ]
        for k, a, b in rows:
            out.append(f"  {k:<26}{_f(a):>11}{_f(b):>11}{_delta(a, b):>10}")
        out.append(f"  {'class PQ / F1':<26}{'reference':>11}{'candidate':>11}{'delta':>10}")
        for name in r["per_class"]:
            pr, pc = r["per_class"][name], c["per_class"][name]
            if pr["n_true"] == 0:
                continue
            out.append(
                f"  {name + ' PQ':<26}{_f(pr['pq']):>11}{_f(pc['pq']):>11}{_delta(pr['pq'], pc['pq']):>10}"
            )
            out.append(
                f"  {name + ' F1':<26}{_f(pr['f1']):>11}{_f(pc['f1']):>11}{_delta(pr['f1'], pc['f1']):>10}"
            )
        if "per_tissue" in r:
            out.append(f"  {'tissue (images) bPQ/mPQ':<26}{'reference':>15}{'candidate':>15}")
            for name, tr in r["per_tissue"].items():
                tc = c["per_tissue"][name]
                label = f"{name} ({tr['images']})"
                a, b = f"{_f(tr['bPQ'])}/{_f(tr['mPQ'])}", f"{_f(tc['bPQ'])}/{_f(tc['mPQ'])}"
                out.append(f"  {label:<26}{a:>15}{b:>15}")
    worst = [w for w in getattr(rep, "worst_tiles", []) if w["bpq"] is not None and w["bpq"] < 1.0][:3]
    for w in worst:
        out.append(
            f"  low agreement: {w['tile']} bPQ {_f(w['bpq'])} mPQ {_f(w['mpq'])} "
            f"(cells: reference {w['reference_cells']}, candidate {w['candidate_cells']})"
        )
    t = rep.timing
    if t:
        out.append(
            f"  time: reference {t.get('reference_s', 0):.1f} s, candidate {t.get('candidate_s', 0):.1f} s, "
            f"post-processing {t.get('postprocess_s', 0):.1f} s"
        )
    for note in rep.notes:
        out.append(f"  note: {note}")
    for f in rep.failures:
        out.append(f"  FAILED: {f}")
    return "\n".join(out)


@dataclass
class ValidationReport:
    candidate: str
    reference: str
    precision: str
    data: str
    tiles: int
    metrics: dict[str, float]  # gated agreement metrics (gate names)
    agreement: dict[str, Any]  # full cell-level agreement report (Evaluator, reference as truth)
    failures: list[str]
    not_applicable: list[str]
    thresholds: dict[str, dict[str, float]]
    ground_truth: dict[str, Any] | None = None  # {"reference": report, "candidate": report}
    timing: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    worst_tiles: list[dict[str, Any]] = field(default_factory=list)
    intervals: dict[str, Any] = field(default_factory=dict)  # name -> metrics.intervals.Interval

    @property
    def passed(self) -> bool:
        return not self.failures

    def raise_if_failed(self) -> None:
        if not self.passed:
            raise GateError(f"{self.candidate} failed validation at {self.precision}:\n{self.format()}")

    def to_dict(self) -> dict[str, Any]:
        def clean(v: Any) -> Any:
            if isinstance(v, float) and math.isnan(v):
                return None
            if isinstance(v, dict):
                return {str(k): clean(x) for k, x in v.items()}
            if isinstance(v, (list, tuple)):
                return [clean(x) for x in v]
            if isinstance(v, np.generic):
                return clean(v.item())
            return v

        return clean(
            {
                "passed": self.passed,
                "candidate": self.candidate,
                "reference": self.reference,
                "precision": self.precision,
                "data": self.data,
                "tiles": self.tiles,
                "metrics": self.metrics,
                "intervals": {k: iv.to_dict() for k, iv in self.intervals.items()},
                "confidence": 0.95,
                "failures": self.failures,
                "not_applicable": self.not_applicable,
                "thresholds": self.thresholds,
                "agreement": self.agreement,
                "ground_truth": self.ground_truth,
                "timing": self.timing,
                "notes": self.notes,
                "worst_tiles": self.worst_tiles,
            }
        )

    def format(self) -> str:
        return format_report(self)
