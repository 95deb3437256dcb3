"""Accuracy metrics (PQ, bPQ, mPQ, mPQ+, detection and per-class F1), the PanNuke loader and `validate`.

Light: numpy at import, scipy when a metric runs; `validate` loads the runtime backends when called.

    from cellvit_trt.metrics import Evaluator, Instances, agreement, open_pannuke_fold
    from cellvit_trt.metrics.validate import validate, validate_all
"""

from cellvit_trt.metrics.agreement import agreement, as_instances
from cellvit_trt.metrics.detection import match_radius, pair_coordinates
from cellvit_trt.metrics.evaluate import PANNUKE_CLASSES, Evaluator, evaluate
from cellvit_trt.metrics.instances import Instances, remap_label
from cellvit_trt.metrics.pannuke import open_pannuke_fold, write_pannuke_fold
from cellvit_trt.metrics.pq import get_fast_pq, match

__all__ = [
    "PANNUKE_CLASSES",
    "Evaluator",
    "Instances",
    "agreement",
    "as_instances",
    "evaluate",
    "get_fast_pq",
    "match",
    "match_radius",
    "open_pannuke_fold",
    "pair_coordinates",
    "remap_label",
    "write_pannuke_fold",
]
