"""Accuracy metrics (PQ, bPQ, mPQ, mPQ+, detection and per-class F1), the PanNuke loader and `validate`.

Light: numpy and scipy only. `validate` imports the runtime backends lazily.
"""

from cellvit_trt.metrics.agreement import agreement, as_instances
from cellvit_trt.metrics.detection import match_radius, pair_coordinates
from cellvit_trt.metrics.evaluate import PANNUKE_CLASSES, Evaluator, evaluate
from cellvit_trt.metrics.instances import Instances, remap_label
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
    "pair_coordinates",
    "remap_label",
]
