"""Cell-level agreement of a candidate deployment with a reference (e.g. FP16/INT8 vs the FP32 model).

The reference plays the ground truth: the same bPQ, mPQ and detection F1 as in `evaluate`, plus the share of
matched cells whose class agrees. Used by `cellvit-trt validate` and by the export parity gate.

    from cellvit_trt.metrics.agreement import agreement
    a = agreement(candidate_tiles, reference_tiles, match_radius=12)   # lists of TileCells (or Instances)
    a["bpq"], a["mpq"], a["f1"], a["type_agreement"]
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from cellvit_trt.errors import InputError
from cellvit_trt.metrics.detection import match_radius as _radius
from cellvit_trt.metrics.evaluate import Evaluator
from cellvit_trt.metrics.instances import Instances


def as_instances(x: Any, name: str = "tile") -> Instances:
    """Instances from TileCells, Instances, a dict or a tuple `(inst_map, ids, types[, centroids])`."""
    if isinstance(x, Instances):
        return x
    if hasattr(x, "inst_map") and hasattr(x, "cells"):
        return Instances.from_tile(x, name=name)
    if isinstance(x, dict):
        try:
            return Instances.from_cells(x["inst_map"], x["id"], x["type"], x.get("centroid"), name=name)
        except KeyError as exc:
            raise InputError(
                f"{name}: dict needs keys 'inst_map', 'id', 'type' (and optional 'centroid'); missing {exc}"
            ) from exc
    if isinstance(x, (tuple, list)) and len(x) in (3, 4):
        return (
            Instances.from_cells(*x, name=name)
            if len(x) == 4
            else Instances.from_cells(x[0], x[1], x[2], name=name)
        )
    raise InputError(
        f"{name}: expected TileCells, Instances, a dict or (inst_map, ids, types[, centroids]), "
        f"got {type(x).__name__}"
    )


def agreement(candidate: Sequence[Any], reference: Sequence[Any], **kwargs: Any) -> dict:
    """Agreement of `candidate` tiles with `reference` tiles: `summarise(agreement_evaluator(...))`."""
    return summarise(agreement_evaluator(candidate, reference, **kwargs))


def agreement_evaluator(
    candidate: Sequence[Any],
    reference: Sequence[Any],
    match_radius: float | None = None,
    num_classes: int | None = None,
    class_names: Sequence[str] | None = None,
    match_iou: float = 0.5,
    magnification: float = 40.0,
) -> Evaluator:
    """The Evaluator of `agreement` (per-tile statistics for confidence intervals live in it).

    Agreement of `candidate` tiles with `reference` tiles (same order, same tile shapes).

    Returns floats `bpq`, `mpq`, `mpq_plus`, `f1`, `precision`, `recall`, `type_agreement`, `dice` (NaN where
    undefined, e.g. no reference cells at all), the cell counts, and `per_class` PQ/F1 keyed by class name.
    Identical inputs give 1.0 everywhere. The centroid radius defaults to 12 px at 40x (6 px at 20x).
    """
    if len(candidate) != len(reference):
        raise InputError(f"agreement: {len(candidate)} candidate tiles but {len(reference)} reference tiles")
    cand = [as_instances(c, f"candidate tile {i}") for i, c in enumerate(candidate)]
    ref = [as_instances(r, f"reference tile {i}") for i, r in enumerate(reference)]
    for i, (c, r) in enumerate(zip(cand, ref, strict=False)):
        if c.shape != r.shape:
            raise InputError(
                f"agreement: tile {i} has shape {c.shape} in the candidate, {r.shape} in the reference"
            )
    if num_classes is None:
        top = max([int(x.types.max()) for x in cand + ref if len(x)] or [1])
        num_classes = len(class_names) if class_names is not None else max(top + 1, 2)
    ev = Evaluator(
        num_classes=num_classes,
        class_names=list(class_names) if class_names else None,
        radius=match_radius if match_radius is not None else _radius(magnification),
        match_iou=match_iou,
    )
    for c, r in zip(cand, ref, strict=False):
        ev.add(r, c)
    return ev


def summarise(ev: Evaluator) -> dict:
    """`agreement`'s dict from its Evaluator (the reference's cells as the truth)."""
    res = ev.result()
    d = res["dataset"]
    n_cand = sum(int(len(p)) for p in ev.detection.paired_pred) + sum(
        len(u) for u in ev.detection.unpaired_pred
    )

    def f(v: Any) -> float:
        return float("nan") if v is None else float(v)

    return {
        "bpq": f(d["bPQ"]),
        "mpq": f(d["mPQ"]),
        "mpq_plus": f(d["mPQ+"]),
        "f1": f(d["f1"]),
        "precision": f(d["precision"]),
        "recall": f(d["recall"]),
        "type_agreement": f(d["type_agreement"]),
        "dice": f(d["dice"]),
        "mean_centroid_distance": f(d["mean_centroid_distance"]),
        "tiles": len(ev.images),
        "n_candidate": int(n_cand),
        "n_reference": int(d["tp"] + d["fn"]),
        "per_class": {k: {"pq": f(v["pq"]), "f1": f(v["f1"])} for k, v in res["per_class"].items()},
    }


def identical_cells(candidate: Any, reference: Any) -> bool:
    """True when two tiles have the same ids, types and the same instance map (cheap exact check)."""
    c, r = as_instances(candidate), as_instances(reference)
    return (
        np.array_equal(c.ids, r.ids)
        and np.array_equal(c.types, r.types)
        and np.array_equal(c.inst_map, r.inst_map)
    )
