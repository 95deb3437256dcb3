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

from cellvit_trt.errors import GateError, InputError
from cellvit_trt.metrics.data import Sample, image_samples, pannuke_samples, parse_data, synthetic_samples
from cellvit_trt.metrics.evaluate import Evaluator
from cellvit_trt.metrics.instances import Instances
from cellvit_trt.metrics.thresholds import thresholds_for

log = logging.getLogger(__name__)

BACKEND_NAMES = ("torch", "torch-cuda", "onnxruntime", "tensorrt")
CKPT = (".pth", ".pt", ".ckpt", ".bin")
WHITE = 255


# ----------------------------------------------------------------------------------------------------------
# Per-output agreement, streamed (the gate's metric names, without holding every map in memory)


class OutputStats:
    """Streaming version of `export.gate.output_metrics` (same metric names)."""

    def __init__(self) -> None:
        self.px = 0
        self.fg_equal = 0
        self.fg_ref = 0
        self.fg_cand = 0
        self.fg_both = 0
        self.type_equal = 0
        self.type_equal_in_fg = 0
        self.hv_max = 0.0
        self.hv_sum = 0.0
        self.hv_n = 0
        self.tissue_max = 0.0
        self.tissue_equal = 0
        self.tissue_n = 0

    def add_maps(self, ref: dict[str, np.ndarray], cand: dict[str, np.ndarray]) -> None:
        fr, fc = ref["fg"] > 0, cand["fg"] > 0
        self.px += fr.size
        self.fg_equal += int((fr == fc).sum())
        self.fg_ref += int(fr.sum())
        self.fg_cand += int(fc.sum())
        self.fg_both += int((fr & fc).sum())
        same = ref["type_map"] == cand["type_map"]
        self.type_equal += int(same.sum())
        self.type_equal_in_fg += int(same[fr].sum())
        d = np.abs(ref["hv"].astype(np.float32) - cand["hv"].astype(np.float32))
        self.hv_max = max(self.hv_max, float(d.max()) if d.size else 0.0)
        self.hv_sum += float(d.sum(dtype=np.float64))
        self.hv_n += d.size

    def add_tissue(self, ref: np.ndarray, cand: np.ndarray) -> None:
        r, c = np.asarray(ref, np.float32), np.asarray(cand, np.float32)
        if r.size:
            self.tissue_max = max(self.tissue_max, float(np.abs(r - c).max()))
            self.tissue_equal += int((r.argmax(1) == c.argmax(1)).sum())
            self.tissue_n += r.shape[0]

    def result(self) -> dict[str, float]:
        nan = float("nan")

        def ratio(a: float, b: float) -> float:
            return a / b if b else nan

        return {
            "fg_agreement": ratio(self.fg_equal, self.px),
            "fg_dice": ratio(2 * self.fg_both, self.fg_ref + self.fg_cand),
            "type_agreement": ratio(self.type_equal, self.px),
            "type_agreement_in_fg": ratio(self.type_equal_in_fg, self.fg_ref),
            "hv_max_abs": self.hv_max if self.hv_n else nan,
            "hv_mean_abs": ratio(self.hv_sum, self.hv_n),
            "tissue_max_abs": self.tissue_max if self.tissue_n else nan,
            "tissue_argmax_agreement": ratio(self.tissue_equal, self.tissue_n),
        }


# ----------------------------------------------------------------------------------------------------------
# Report


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
        from cellvit_trt.metrics.report import format_report

        return format_report(self)


# ----------------------------------------------------------------------------------------------------------
# Runners


def _is_runner(x: Any) -> bool:
    return hasattr(x, "infer") or callable(x)


@contextlib.contextmanager
def _active(runner: Any) -> Iterator[Any]:
    """Activate a backend for the block unless it is already active (then the caller owns it)."""
    if hasattr(runner, "activate") and not getattr(runner, "is_active", True):
        with runner:
            yield runner
    else:
        yield runner


def _infer(runner: Any, images: np.ndarray) -> dict[str, np.ndarray]:
    out = runner.infer(images) if hasattr(runner, "infer") else runner(images)
    for key in ("fg", "hv", "type_map", "tissue_logits"):
        if key not in out:
            raise InputError(f"validate: runner output {key!r} missing (got {sorted(out)})")
    return out


def open_candidate(
    candidate: Any,
    reference: str | Path | None,
    *,
    backend: str = "auto",
    batch: int = 8,
    tile_size: int | None = None,
    precision: str | None = None,
) -> tuple[Any, str]:
    """(runner, label) for a candidate spec: runner object, backend name, or model file."""
    if _is_runner(candidate) and not isinstance(candidate, (str, Path)):
        return candidate, getattr(candidate, "name", type(candidate).__name__)
    from cellvit_trt.runtime.backends import open_backend

    spec = str(candidate)
    if spec in BACKEND_NAMES:
        if reference is None:
            raise InputError(
                f"--candidate {spec}: a backend name runs the reference checkpoint; give --reference"
            )
        return (
            open_backend(reference, backend=spec, batch=batch, tile_size=tile_size, precision=precision),
            f"{spec}:{Path(str(reference)).name}" + (f"@{precision}" if precision else ""),
        )
    return open_backend(spec, backend=backend, batch=batch, tile_size=tile_size, precision=precision), spec


def open_reference(
    reference: str | Path | Any, tile_size: int, batch: int, device: str = "auto"
) -> tuple[Any, str]:
    """The FP32 PyTorch reference (on the GPU when `device` is 'auto' and PyTorch sees one)."""
    if _is_runner(reference) and not isinstance(reference, (str, Path)):
        return reference, getattr(reference, "name", type(reference).__name__)
    from cellvit_trt.runtime.backends import model_kind
    from cellvit_trt.runtime.backends.torch import TorchBackend

    kind, path = model_kind(reference)
    if kind != "checkpoint":
        raise InputError(
            f"--reference {reference}: the reference is the FP32 PyTorch model, so give its "
            f"checkpoint (.pth), not a {kind}"
        )
    if device == "auto":
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    ref = TorchBackend(path, device=device, precision="fp32", batch=batch, tile_size=tile_size)
    return ref, f"torch-fp32:{path.name}"


def _sha(meta: Any) -> str | None:
    raw = getattr(meta, "raw", None) or {}
    model = raw.get("model") if isinstance(raw.get("model"), dict) else {}
    for d in (raw, model):
        for key in ("checkpoint_sha256", "source_checkpoint_sha256", "sha256"):
            if isinstance(d.get(key), str) and d[key]:
                return d[key]
    return None


def _checkpoint_mismatch(cand_meta: Any, ref_meta: Any) -> str | None:
    a, b = _sha(cand_meta), _sha(ref_meta)
    if a and b and a != b:
        return (
            f"the candidate was made from checkpoint sha256 {a[:12]}…, the reference is {b[:12]}…: "
            "they are different models, so agreement is not meaningful"
        )
    return None


# ----------------------------------------------------------------------------------------------------------
# Tiling of data tiles into model tiles


def _layouts(n: int, k: int) -> list[list[int]]:
    per = k * k
    return [list(range(s, min(s + per, n))) for s in range(0, n, per)]


def _mosaic(images: Sequence[np.ndarray], k: int, t: int) -> np.ndarray:
    out = np.full((k * t, k * t, 3), WHITE, np.uint8)
    for j, im in enumerate(images):
        r, c = divmod(j, k)
        out[r * t : (r + 1) * t, c * t : (c + 1) * t] = im
    return out


def _cut(maps: dict[str, np.ndarray], b: int, j: int, k: int, t: int) -> dict[str, np.ndarray]:
    r, c = divmod(j, k)
    ys, xs = slice(r * t, (r + 1) * t), slice(c * t, (c + 1) * t)
    return {
        "fg": np.ascontiguousarray(maps["fg"][b, ys, xs]),
        "hv": np.ascontiguousarray(maps["hv"][b, :, ys, xs], dtype=np.float32),
        "type_map": np.ascontiguousarray(maps["type_map"][b, ys, xs]),
    }


# ----------------------------------------------------------------------------------------------------------
# Main entry


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
            opened.append((stack.enter_context(_active(runner)), label))
        tiles = {int(getattr(r, "tile_size", 0) or tile_size or data_tile or 256) for r, _ in opened}
        if len(tiles) > 1:
            raise InputError(
                f"validate: the candidates have different tile sizes {sorted(tiles)}; run them separately"
            )
        model_tile = tiles.pop()
        ref_runner, ref_label = open_reference(reference, model_tile, batch, reference_device)
        ref = stack.enter_context(_active(ref_runner))
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
            mismatch = _checkpoint_mismatch(meta, rmeta)
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
    failures, skipped = side.limits.check(metrics)
    notes = list(notes)
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
        groups = _layouts(len(buf), k)
        if k > 1:
            model_in = np.stack([_mosaic([buf[i].image for i in g], k, t) for g in groups])
        else:
            model_in = np.stack([s.image for s in buf])
        t0 = time.perf_counter()
        r_out = _infer(ref, model_in)
        timing["reference_s"] += time.perf_counter() - t0
        r_maps, r_cells = {}, {}
        t0 = time.perf_counter()
        for b, g in enumerate(groups):
            for j, i in enumerate(g):
                r_maps[i] = _cut(r_out, b, j, k, t)
                r_cells[i] = cells(r_maps[i])
                if buf[i].truth is not None:
                    ref_truth = ref_truth or Evaluator(**ev_kwargs)
                    ref_truth.add(buf[i].truth, r_cells[i], buf[i].tissue)
        timing["postprocess_s"] += time.perf_counter() - t0
        for side in sides:
            t0 = time.perf_counter()
            c_out = _infer(side.runner, model_in)
            side.seconds += time.perf_counter() - t0
            side.stats.add_tissue(r_out["tissue_logits"], c_out["tissue_logits"])
            for b, g in enumerate(groups):
                for j, i in enumerate(g):
                    cm = _cut(c_out, b, j, k, t)
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


def _worst(per_tile: list[tuple[str, float, float, int, int]], n: int = 5) -> list[dict[str, Any]]:
    """The tiles where the candidate's cells agree least with the reference's (by bPQ, then mPQ)."""
    scored = [t for t in per_tile if not math.isnan(t[1])]
    scored.sort(key=lambda t: (t[1], -1.0 if math.isnan(t[2]) else t[2]))
    return [
        {"tile": name, "bpq": b, "mpq": m, "reference_cells": nr, "candidate_cells": nc}
        for name, b, m, nr, nc in scored[:n]
    ]
