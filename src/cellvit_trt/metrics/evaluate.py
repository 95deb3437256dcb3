"""Dataset metrics with the published PanNuke conventions (CellViT `run_patch_inference`).

    ev = Evaluator(num_classes=6, class_names=[...], magnification=40)
    for true, pred, tissue in data:
        ev.add(true, pred, tissue)          # Instances of one image each
    report = ev.result()                      # JSON-ready dict

- bPQ: per image, all predicted cells of a non-background type against all true instances; images without
  true instances are NaN and skipped (nanmean).
- mPQ: per image and class, PQ on that class's instances; classes absent from the true image are NaN, so false
  positives of absent classes are not penalised; nanmean over classes, then over images. Class 0 is skipped.
- mPQ+: CoNIC, TP/FP/FN/ΣIoU per class summed over all images, then PQ per class and the mean over classes
  (classes with no true and no predicted instance anywhere are left out).
- Detection: centroid Hungarian pairing within the radius, TP/FP/FN pooled over the dataset; per-class F1 with
  HoVer-Net `_f1_type` weights (2, 2, 1, 1).
- Tissue-averaged (the paper's numbers): per-tissue nanmean over images, then the mean over tissues.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from cellvit_trt.classes import PANNUKE_NUCLEI
from cellvit_trt.errors import InputError
from cellvit_trt.metrics.detection import DetectionPool, match_radius
from cellvit_trt.metrics.instances import Instances
from cellvit_trt.metrics.pq import class_stats, match, pq_from_counts, pq_stats

PANNUKE_CLASSES = PANNUKE_NUCLEI


@dataclass(frozen=True)
class ImageScores:
    bpq: float
    bdq: float
    bsq: float
    class_pq: np.ndarray  # [C], NaN where the class is absent from the true image (index 0 always NaN)
    class_dq: np.ndarray
    class_sq: np.ndarray
    dice: float  # binary foreground Dice of the scored instances

    @property
    def mpq(self) -> float:
        return _nanmean(self.class_pq[1:])


def _nanmean(x) -> float:
    x = np.asarray(x, np.float64)
    if x.size == 0 or np.all(np.isnan(x)):
        return float("nan")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return float(np.nanmean(x))


def _num(x: float) -> float | None:
    """JSON-friendly float: NaN becomes None."""
    x = float(x)
    return None if np.isnan(x) else x


class Evaluator:
    """Accumulates per-image statistics; `result()` gives the dataset report. Memory is O(images + cells)."""

    def __init__(
        self,
        num_classes: int = 6,
        class_names: list[str] | tuple[str, ...] | None = None,
        magnification: float = 40,
        radius: float | None = None,
        match_iou: float = 0.5,
    ) -> None:
        if num_classes < 2:
            raise ValueError(f"num_classes must be >= 2 (background + at least one class), got {num_classes}")
        self.num_classes = int(num_classes)
        if class_names is None:
            class_names = PANNUKE_CLASSES if num_classes == 6 else [f"class_{i}" for i in range(num_classes)]
        if len(class_names) != num_classes:
            raise ValueError(f"class_names has {len(class_names)} names for {num_classes} classes")
        self.class_names = list(class_names)
        self.radius = float(radius) if radius is not None else match_radius(magnification)
        self.match_iou = float(match_iou)
        self.images: list[ImageScores] = []
        self.tissues: list[str | None] = []
        self.class_totals = np.zeros((self.num_classes, 5))  # tp, fp, fn, iou_sum, n_true (mPQ+)
        self.detection = DetectionPool()

    def add(self, true: Instances, pred: Instances, tissue: str | None = None) -> ImageScores:
        for side, inst in (("true", true), ("predicted", pred)):
            if len(inst) and (inst.types.min() < 0 or inst.types.max() >= self.num_classes):
                raise InputError(
                    f"image {len(self.images)}: {side} class ids span {inst.types.min()}.."
                    f"{inst.types.max()}, but the evaluator has {self.num_classes} classes "
                    f"(0..{self.num_classes - 1})"
                )
        pred = pred.restricted(pred.types > 0)  # predicted type-0 cells are never scored
        m = match(true, pred, self.match_iou)
        if len(true) == 0:
            bdq = bsq = bpq = float("nan")
        else:
            bdq, bsq, bpq = pq_from_counts(*_astuple(pq_stats(m)))
        cs = class_stats(m, true.types, pred.types, self.num_classes)
        self.class_totals += cs
        cdq = np.full(self.num_classes, np.nan)
        csq = np.full(self.num_classes, np.nan)
        cpq = np.full(self.num_classes, np.nan)
        for c in range(1, self.num_classes):
            if cs[c, 4] > 0:
                cdq[c], csq[c], cpq[c] = pq_from_counts(*cs[c, :4])
        self.detection.add(*true.detection_view(), *pred.detection_view(), self.radius)
        scores = ImageScores(bpq, bdq, bsq, cpq, cdq, csq, m.dice)
        self.images.append(scores)
        self.tissues.append(tissue)
        return scores

    def result(self) -> dict:
        n = len(self.images)
        cls = range(1, self.num_classes)
        bpq = np.array([s.bpq for s in self.images])
        mpq = np.array([s.mpq for s in self.images])
        cpq = np.array([s.class_pq for s in self.images]).reshape(n, self.num_classes)
        cdq = np.array([s.class_dq for s in self.images]).reshape(n, self.num_classes)
        csq = np.array([s.class_sq for s in self.images]).reshape(n, self.num_classes)
        det = self.detection.summary(list(cls))

        plus = {}
        for c in cls:
            tp, fp, fn, iou, n_true = self.class_totals[c]
            if tp + fp + fn > 0:
                plus[c] = pq_from_counts(tp, fp, fn, iou)[2]
        per_class = {}
        for c in cls:
            per_class[self.class_names[c]] = {
                "pq": _num(_nanmean(cpq[:, c])),
                "dq": _num(_nanmean(cdq[:, c])),
                "sq": _num(_nanmean(csq[:, c])),
                "pq_plus": _num(plus.get(c, float("nan"))),
                "f1": _num(det["per_class"][c]["f1"]),
                "precision": _num(det["per_class"][c]["precision"]),
                "recall": _num(det["per_class"][c]["recall"]),
                "n_true": int(self.class_totals[c, 4]),
                "n_pred": int(self.class_totals[c, 0] + self.class_totals[c, 1]),
            }
        dataset = {
            "images": n,
            "bPQ": _num(_nanmean(bpq)),
            "bDQ": _num(_nanmean([s.bdq for s in self.images])),
            "bSQ": _num(_nanmean([s.bsq for s in self.images])),
            "mPQ": _num(_nanmean(mpq)),
            "mDQ": _num(_nanmean([_nanmean(s.class_dq[1:]) for s in self.images])),
            "mSQ": _num(_nanmean([_nanmean(s.class_sq[1:]) for s in self.images])),
            "mPQ+": _num(np.mean(list(plus.values())) if plus else float("nan")),
            "dice": _num(_nanmean([s.dice for s in self.images])),
            "f1": _num(det["f1"]),
            "precision": _num(det["precision"]),
            "recall": _num(det["recall"]),
            "tp": det["tp"],
            "fp": det["fp"],
            "fn": det["fn"],
            "type_agreement": _num(det["type_agreement"]),
            "mean_centroid_distance": _num(det["mean_centroid_distance"]),
        }
        out = {
            "dataset": dataset,
            "per_class": per_class,
            "conventions": {
                "match_iou": self.match_iou,
                "match_radius_px": self.radius,
                "f1_type_weights": [2, 2, 1, 1],
            },
        }
        if any(t is not None for t in self.tissues):
            tissues = np.array([str(t) for t in self.tissues])
            per_tissue = {}
            for t in sorted(set(tissues.tolist())):
                sel = tissues == t
                per_tissue[t] = {
                    "images": int(sel.sum()),
                    "bPQ": _num(_nanmean(bpq[sel])),
                    "mPQ": _num(_nanmean(mpq[sel])),
                    "per_class_pq": {self.class_names[c]: _num(_nanmean(cpq[sel, c])) for c in cls},
                }
            out["per_tissue"] = per_tissue
            out["tissue_averaged"] = {
                "bPQ": _num(
                    _nanmean([v["bPQ"] if v["bPQ"] is not None else np.nan for v in per_tissue.values()])
                ),
                "mPQ": _num(
                    _nanmean([v["mPQ"] if v["mPQ"] is not None else np.nan for v in per_tissue.values()])
                ),
                "tissues": len(per_tissue),
            }
        return out


def _astuple(s) -> tuple[float, float, float, float]:
    return (s.tp, s.fp, s.fn, s.iou_sum)


def evaluate(
    trues: list[Instances], preds: list[Instances], tissues: list[str] | None = None, **kwargs
) -> dict:
    """One-shot `Evaluator` over aligned lists of true and predicted Instances."""
    if len(trues) != len(preds):
        raise ValueError(f"{len(trues)} true images but {len(preds)} predictions")
    ev = Evaluator(**kwargs)
    for i, (t, p) in enumerate(zip(trues, preds, strict=False)):
        ev.add(t, p, None if tissues is None else tissues[i])
    return ev.result()
