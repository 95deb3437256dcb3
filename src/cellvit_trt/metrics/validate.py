"""Validate a candidate deployment against the FP32 PyTorch reference, and against ground truth where known.

    from cellvit_trt.metrics.validate import validate
    report = validate("cellvit.int8.onnx", reference="model.pth", data="pannuke/fold2", limit=256)
    print(report.format()); report.raise_if_failed()        # GateError when below the precision's thresholds

The candidate is an engine, an ONNX graph (any precision), a checkpoint, a backend name applied to the
reference checkpoint (`torch`, `torch-cuda`, `onnxruntime`, `tensorrt`), or any runner object with
`.infer(uint8[N,H,W,3]) -> maps`. Both runners see identical input tiles; both outputs go through the same
post-processing (`cellvit_trt.kernels`). The report holds:

- agreement of candidate vs reference: per output tensor (fg/type pixel agreement, HV and tissue-logit errors)
  and per cell (bPQ, mPQ, detection F1, type agreement of matched cells), with the reference as ground truth;
- where the data has ground truth (PanNuke folds, synthetic tiles): the absolute metrics of both, per class,
  per tissue, with the published conventions (`cellvit_trt.metrics.evaluate`);
- pass/fail against the thresholds of the candidate's precision (the export gate's `gate_thresholds.yaml`).

Data tiles smaller than the model's fixed tile (a 256 px PanNuke fold through a 1024 px graph) are laid out
k x k in one model tile (white filler), and the output maps are cut back to the data tiles before
post-processing, so every metric is computed per data tile as published.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cellvit_trt.errors import InputError
from cellvit_trt.metrics.data import Sample, image_samples, pannuke_samples, parse_data, synthetic_samples
from cellvit_trt.metrics.evaluate import Evaluator
from cellvit_trt.metrics.instances import Instances
from cellvit_trt.metrics.mosaic import cut, layouts, mosaic
from cellvit_trt.metrics.outputs import OutputStats
from cellvit_trt.metrics.report import ValidationReport
from cellvit_trt.metrics.runners import (
    CKPT,
    active,
    checkpoint_mismatch,
    infer_maps,
    open_candidate,
    open_reference,
)
from cellvit_trt.metrics.thresholds import thresholds_for

log = logging.getLogger(__name__)

__all__ = ["ValidationReport", "validate", "validate_all"]


@dataclass
class _Candidate:
    """One candidate's runner and accumulators (several candidates share one reference pass)."""

    runner: Any
    label: str
    precision: str
    limits: Any
    ev_kwargs: dict[str, Any]
    stats: OutputStats = field(default_factory=OutputStats)
    agree: Evaluator | None = None
    truth: Evaluator | None = None
    seconds: float = 0.0
    post_seconds: float = 0.0
    per_tile: list[tuple[str, float, float, int, int]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.agree = Evaluator(**self.ev_kwargs)


def validate(
    candidate: Any, reference: str | Path | Any | None = None, data: str | Path = "synthetic:8", **kwargs: Any
) -> ValidationReport:
    """Run one candidate and the FP32 reference on the same tiles; see the module docstring and
    `validate_all` for the keyword arguments. Never raises on a failed gate (use `raise_if_failed`)."""
    return validate_all([candidate], reference, data, **kwargs)[0]


def validate_all(
    candidates: Sequence[Any],
    reference: str | Path | Any | None = None,
    data: str | Path = "synthetic:8",
    *,
    limit: int = 64,
    backend: str = "auto",
    batch: int = 4,
    precision: str | None = None,
    candidate_precision: str | None = None,
    thresholds: str | Path | None = None,
    magnification: float | None = None,
    seed: int = 0,
    synthetic_tile: int = 256,
    tile_size: int | None = None,
    reference_device: str = "auto",
) -> list[ValidationReport]:
    """Validate several candidates (e.g. the FP16 and INT8 graphs) against one reference pass over the tiles.

    `precision` forces the thresholds for every candidate (default: each graph's metadata, else fp32);
    `candidate_precision` is passed to backend-name candidates (e.g. fp16 autocast for torch-cuda), and
    `tile_size` to candidates without a fixed tile (checkpoints; default: the data's tile, else 1024). Raises
    InputError/DependencyError/DeviceError on bad inputs, never on a failed gate.
    """
    from cellvit_trt.kernels import PostProcessor, PostProcessParams

    if batch < 1:
        raise InputError(f"--batch: expected >= 1, got {batch}")
    if not candidates:
        raise InputError("validate: no candidate given (--candidate)")
    ds = parse_data(data, limit)
    if reference is None:
        ckpts = [c for c in candidates if isinstance(c, (str, Path)) and Path(str(c)).suffix.lower() in CKPT]
        reference = ckpts[0] if ckpts else None
    if reference is None:
        raise InputError(
            "validate: give the reference checkpoint (--reference model.pth); the candidate alone "
            "has no FP32 PyTorch model to compare with"
        )
    # Data tile size drives a torch candidate's tile size; graphs and engines have their own.
    data_tile = synthetic_tile if ds.kind == "synthetic" else 0
    if ds.kind == "pannuke":
        from cellvit_trt.metrics.pannuke import open_pannuke_fold

        data_tile = open_pannuke_fold(ds.path).tile_shape[0]
    notes: list[str] = []
    with contextlib.ExitStack() as stack:
        opened = []
        for c in candidates:
            runner, label = open_candidate(
                c,
                reference,
                backend=backend,
                batch=batch,
                tile_size=tile_size or data_tile or None,
                precision=candidate_precision,
            )
            opened.append((stack.enter_context(active(runner)), label))
        tiles = {int(getattr(r, "tile_size", 0) or tile_size or data_tile or 256) for r, _ in opened}
        if len(tiles) > 1:
            raise InputError(
                f"validate: the candidates have different tile sizes {sorted(tiles)}; run them separately"
            )
        model_tile = tiles.pop()
        # An engine's optimisation profile may allow fewer tiles per call than asked for.
        batch = min([batch] + [int(m) for r, _ in opened if (m := getattr(r, "max_batch", 0) or 0) > 0])
        ref_runner, ref_label = open_reference(reference, model_tile, batch, reference_device)
        ref = stack.enter_context(active(ref_runner))
        rmeta = getattr(ref, "meta", None)
        cmeta = getattr(opened[0][0], "meta", None)
        mag = float(
            magnification or getattr(rmeta, "magnification", 0) or getattr(cmeta, "magnification", 0) or 40.0
        )
        class_names = list(getattr(rmeta, "class_names", ()) or ()) or None
        ev_kwargs = {
            "num_classes": len(class_names) if class_names else 6,
            "class_names": class_names,
            "magnification": mag,
        }
        target_mpp = float(getattr(rmeta, "target_mpp", 0.25) or 0.25)
        sides = []
        for runner, label in opened:
            meta = getattr(runner, "meta", None)
            prec = precision or getattr(meta, "precision", None) or "fp32"
            side = _Candidate(runner, label, prec, thresholds_for(prec, thresholds), ev_kwargs)
            mismatch = checkpoint_mismatch(meta, rmeta)
            if mismatch:
                log.warning("validate: %s: %s", label, mismatch)
            sides.append((side, [mismatch] if mismatch else []))
        if ds.kind == "pannuke":
            t, n, samples = pannuke_samples(ds.path, ds.count)
        elif ds.kind == "synthetic":
            t, n, samples = synthetic_samples(ds.count, data_tile, seed=seed)
        else:
            t, n, samples = image_samples(ds.path, ds.count, model_tile, target_mpp)
        if model_tile % t:
            raise InputError(
                f"validate: data tiles are {t} px but the candidate's tile is {model_tile} px; "
                f"export the graph at --tile-size {t} (or a multiple of it)"
            )
        k = model_tile // t
        if k > 1:
            notes.append(
                f"{t} px data tiles laid out {k}x{k} per {model_tile} px model tile; maps are cut "
                "back to data tiles before post-processing"
            )
        pp = PostProcessor(PostProcessParams.for_magnification(mag))
        ref_truth, timing = _run(ref, [c for c, _ in sides], samples, n, k, t, batch, pp, ev_kwargs)
    ref_gt = ref_truth.result() if ref_truth is not None else None
    return [_report(side, extra + notes, ref_label, ref_gt, data, timing) for side, extra in sides]


def _report(
    side: _Candidate, notes: list[str], ref_label: str, ref_gt: dict | None, data: Any, timing: dict[str, Any]
) -> ValidationReport:
    metrics = side.stats.result()
    a = side.agree.result()
    d = a["dataset"]
    for key, val in (
        ("bpq", d["bPQ"]),
        ("mpq", d["mPQ"]),
        ("f1", d["f1"]),
        ("cell_type_agreement", d["type_agreement"]),
    ):
        metrics[key] = float("nan") if val is None else float(val)
    from cellvit_trt.export.gate import sample_notes
    from cellvit_trt.metrics.intervals import cell_tile_columns, figure_intervals

    columns = {**side.stats.tile_columns(), **cell_tile_columns(side.agree)}
    intervals = figure_intervals(columns)
    failures, skipped = side.limits.check(metrics, intervals)
    notes = list(notes) + sample_notes(side.limits, int(timing["tiles"]), metrics, intervals)
    if d["tp"] + d["fn"] == 0:
        notes.append(
            "the reference found no cells on these tiles: cell-level agreement was not measured "
            "(use tiles with nuclei, e.g. a PanNuke fold or synthetic:N)"
        )
    gt = {"reference": ref_gt, "candidate": side.truth.result()} if ref_gt is not None else None
    return ValidationReport(
        candidate=side.label,
        reference=ref_label,
        precision=side.precision,
        data=str(data),
        tiles=int(timing["tiles"]),
        metrics=metrics,
        agreement=a,
        failures=failures,
        not_applicable=skipped,
        thresholds={"min": dict(side.limits.min), "max": dict(side.limits.max)},
        ground_truth=gt,
        timing={
            "reference_s": timing["reference_s"],
            "reference_postprocess_s": timing["postprocess_s"],
            "candidate_s": side.seconds,
            "postprocess_s": side.post_seconds,
        },
        notes=notes,
        worst_tiles=_worst(side.per_tile),
        intervals=intervals,
    )


def _run(
    ref: Any,
    sides: list[_Candidate],
    samples: Iterator[Sample],
    n: int,
    k: int,
    t: int,
    batch: int,
    pp: Any,
    ev_kwargs: dict[str, Any],
) -> tuple[Evaluator | None, dict[str, Any]]:
    """Stream the tiles: one reference inference per batch, then every candidate on the same batch."""
    ref_truth: Evaluator | None = None
    timing: dict[str, Any] = {"reference_s": 0.0, "postprocess_s": 0.0, "tiles": 0}
    per_batch = batch * k * k
    buf: list[Sample] = []

    def cells(maps: dict[str, np.ndarray]) -> Instances:
        return Instances.from_tile(pp.process_tile(maps["fg"], maps["hv"], maps["type_map"]))

    def flush() -> None:
        nonlocal ref_truth
        groups = layouts(len(buf), k)
        if k > 1:
            model_in = np.stack([mosaic([buf[i].image for i in g], k, t) for g in groups])
        else:
            model_in = np.stack([s.image for s in buf])
        t0 = time.perf_counter()
        r_out = infer_maps(ref, model_in)
        timing["reference_s"] += time.perf_counter() - t0
        r_maps, r_cells = {}, {}
        t0 = time.perf_counter()
        for b, g in enumerate(groups):
            for j, i in enumerate(g):
                r_maps[i] = cut(r_out, b, j, k, t)
                r_cells[i] = cells(r_maps[i])
                if buf[i].truth is not None:
                    ref_truth = ref_truth or Evaluator(**ev_kwargs)
                    ref_truth.add(buf[i].truth, r_cells[i], buf[i].tissue)
        timing["postprocess_s"] += time.perf_counter() - t0
        for side in sides:
            t0 = time.perf_counter()
            c_out = infer_maps(side.runner, model_in)
            side.seconds += time.perf_counter() - t0
            _same_shapes(side.label, c_out, r_out)
            side.stats.add_tissue(r_out["tissue_logits"], c_out["tissue_logits"])
            for b, g in enumerate(groups):
                for j, i in enumerate(g):
                    cm = cut(c_out, b, j, k, t)
                    side.stats.add_maps(r_maps[i], cm)
                    t0 = time.perf_counter()
                    c_cells = cells(cm)
                    side.post_seconds += time.perf_counter() - t0
                    sc = side.agree.add(r_cells[i], c_cells, buf[i].tissue)
                    side.per_tile.append(
                        (buf[i].name, sc.bpq, sc.mpq, len(r_cells[i]), int((c_cells.types > 0).sum()))
                    )
                    if buf[i].truth is not None:
                        side.truth = side.truth or Evaluator(**ev_kwargs)
                        side.truth.add(buf[i].truth, c_cells, buf[i].tissue)
        timing["tiles"] += len(buf)
        buf.clear()
        log.info("validate: %d/%d tiles", timing["tiles"], n)

    for s in samples:
        if s.image.shape != (t, t, 3) or s.image.dtype != np.uint8:
            raise InputError(
                f"validate: tile {s.name} is {s.image.dtype}{list(s.image.shape)}, expected uint8[{t},{t},3]"
            )
        buf.append(s)
        if len(buf) == per_batch:
            flush()
    if buf:
        flush()
    if timing["tiles"] == 0:
        raise InputError("validate: no tiles to compare (empty data or every tile was glass)")
    return ref_truth, timing


def _same_shapes(label: str, cand: dict[str, np.ndarray], ref: dict[str, np.ndarray]) -> None:
    for key in ("fg", "hv", "type_map", "tissue_logits"):
        c, r = np.shape(cand[key]), np.shape(ref[key])
        if c != r:
            raise InputError(
                f"validate: {label} returns {key!r} of shape {list(c)}, the reference {list(r)}: "
                "the candidate is not a deployment of the reference model"
            )


def _worst(per_tile: list[tuple[str, float, float, int, int]], n: int = 5) -> list[dict[str, Any]]:
    """The tiles where the candidate's cells agree least with the reference's (by bPQ, then mPQ)."""
    scored = [t for t in per_tile if not math.isnan(t[1])]
    scored.sort(key=lambda t: (t[1], -1.0 if math.isnan(t[2]) else t[2]))
    return [
        {"tile": name, "bpq": b, "mpq": m, "reference_cells": nr, "candidate_cells": nc}
        for name, b, m, nr, nc in scored[:n]
    ]
