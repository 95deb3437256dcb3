"""`cellvit-trt demo`: the whole product on an embedded default, with no download and no GPU needed.

1. writes a synthetic pyramidal slide (0.25 mpp) with exact ground truth (`cellvit_trt.synthetic`);
2. exports the shipped demo model (a tiny CellViT trained on synthetic tiles only) to a deployment ONNX graph,
   with the export parity gate;
3. builds a TensorRT engine when TensorRT and a GPU are present, else runs ONNX Runtime;
4. runs the streaming pipeline (tiles -> backend -> Numba post-processing -> merge -> writers);
5. validates the merged cells against the synthetic ground truth (bPQ, mPQ, detection F1);
6. writes the benchmark summary and a short report, and says where each file is.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from cellvit_trt.argtypes import nonnegative_int, positive_int
from cellvit_trt.io import atomic_open, write_json

TILE_OVERLAP = 64  # upstream: 32 px per side


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "-o", "--output", type=Path, default=Path("demo_out"), help="output folder (default demo_out)"
    )
    p.add_argument(
        "--tiles", type=positive_int, default=3, help="synthetic slide size in tiles per side (default 3)"
    )
    p.add_argument(
        "--tile-size", dest="tile_size", type=positive_int, default=1024, help="tile size (default 1024)"
    )
    p.add_argument(
        "--backend",
        default="auto",
        choices=["auto", "tensorrt", "onnxruntime"],
        help="auto: TensorRT with a GPU and TensorRT, else ONNX Runtime",
    )
    p.add_argument("--batch", type=positive_int, default=2, help="tiles per batch (default 2)")
    p.add_argument("--seed", type=nonnegative_int, default=7, help="seed of the synthetic slide (default 7)")


class _Steps:
    """Timing of the demo's steps, printed as they finish."""

    def __init__(self) -> None:
        self.times: dict[str, float] = {}
        self._t = time.perf_counter()

    def done(self, name: str, detail: str = "") -> None:
        now = time.perf_counter()
        self.times[name] = round(now - self._t, 2)
        self._t = now
        print(f"[demo] {name}: {self.times[name]:.1f} s{'  ' + detail if detail else ''}", flush=True)


def _rasterise(cells_json: Path, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Instance and type maps drawn from the run's cells.json contours (level-0 pixels)."""
    import cv2

    cells = json.loads(cells_json.read_text())["cells"]
    inst = np.zeros(shape, np.int32)
    types = np.zeros(shape, np.uint8)
    for i, c in enumerate(cells, start=1):
        poly = np.rint(np.asarray(c["contour"], np.float64)).astype(np.int32).reshape(-1, 1, 2)
        cv2.fillPoly(inst, [poly], i)
        cv2.fillPoly(types, [poly], int(c["type"]))
    return inst, types


def validate_against_truth(slide: Any, run_dir: Path, magnification: float) -> dict[str, Any]:
    """bPQ / mPQ / detection F1 of the merged cells against the synthetic slide's exact ground truth."""
    import tifffile

    from cellvit_trt.metrics import Evaluator, Instances
    from cellvit_trt.synthetic.slide import load_slide_cells

    truth_cells, _ = load_slide_cells(slide.slide)
    gt_inst = tifffile.imread(slide.labels_path).astype(np.int32)
    lut = np.zeros(int(gt_inst.max()) + 1, np.uint8)
    lut[truth_cells.id] = truth_cells.type
    gt = Instances.from_maps(gt_inst, lut[gt_inst])
    pred_inst, pred_types = _rasterise(run_dir / "cells.json", gt_inst.shape)
    pred = Instances.from_maps(pred_inst, pred_types, name="prediction")
    ev = Evaluator(magnification=magnification)
    ev.add(gt, pred)
    return ev.result()


def _f(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.3f}"


def per_class_table(per_class: dict[str, dict[str, Any]]) -> list[str]:
    """Markdown rows of PQ / F1 / precision / recall and counts per class (the mPQ is their PQ mean)."""
    lines = [
        "| class | PQ | F1 | precision | recall | true cells | predicted cells |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, c in per_class.items():
        lines.append(
            f"| {name} | {_f(c.get('pq'))} | {_f(c.get('f1'))} | {_f(c.get('precision'))} | "
            f"{_f(c.get('recall'))} | {c.get('n_true', 'n/a')} | {c.get('n_pred', 'n/a')} |"
        )
    return lines


def _command(args: argparse.Namespace) -> str:
    default = {
        "output": Path("demo_out"),
        "tiles": 3,
        "tile_size": 1024,
        "backend": "auto",
        "batch": 2,
        "seed": 7,
    }
    flags = {
        "output": "-o",
        "tiles": "--tiles",
        "tile_size": "--tile-size",
        "backend": "--backend",
        "batch": "--batch",
        "seed": "--seed",
    }
    parts = ["cellvit-trt demo"]
    for key, flag in flags.items():
        value = getattr(args, key, default[key])
        if value != default[key]:
            parts.append(f"{flag} {value}")
    return " ".join(parts)


def _report(facts: dict[str, Any]) -> str:
    v = facts["validation"]["dataset"]
    t = facts["run"]["timing"]
    lines = [
        "# cellvit-trt demo report",
        "",
        "Model: the shipped tiny CellViT trained on synthetic H&E only "
        "(a demo of the product, not a pathology "
        "model).",
        f"Slide: synthetic {facts['slide']['width']}x{facts['slide']['height']} px at 0.25 mpp, "
        f"{facts['slide']['cells']} ground-truth nuclei.",
        f"Backend: {facts['run']['backend']} "
        f"({facts['export']['precision']} graph, tile {facts['tile_size']}).",
        "",
        "## Accuracy against the synthetic ground truth",
        f"Measured by `{facts['command']}` (the merged cells of the whole slide against its exact truth).",
        "",
        f"- bPQ {_f(v['bPQ'])}, mPQ {_f(v['mPQ'])}, detection F1 {_f(v['f1'])} "
        f"(precision {_f(v['precision'])}, recall {_f(v['recall'])})",
        "",
        *per_class_table(facts["validation"].get("per_class", {})),
        "",
        "- export parity gate (ONNX Runtime vs PyTorch FP32): "
        + ("passed" if facts["export"]["gate_passed"] else "FAILED"),
        "",
        "## Speed on this machine",
        f"- {t['tiles']} tiles in {t['wall_s']:.1f} s: {t['tiles_per_s']:.2f} tiles/s; "
        "the backend waited for input "
        f"{100 * t['backend_wait_fraction']:.1f}% of its time",
        f"- {facts['run']['cells']} cells after the cross-tile merge",
        "",
        "## Step times (s)",
        *[f"- {k}: {s:.1f}" for k, s in facts["steps"].items()],
        "",
        "## Files",
        *[f"- {k}: {p}" for k, p in facts["files"].items()],
    ]
    return "\n".join(lines) + "\n"


def run(args: argparse.Namespace) -> int:
    from cellvit_trt.data import demo_checkpoint_path
    from cellvit_trt.errors import InputError

    if args.tiles < 1 or args.tile_size % 16 or args.tile_size <= TILE_OVERLAP or args.batch < 1:
        raise InputError("demo: --tiles and --batch must be >= 1, --tile-size a multiple of 16 above 64")
    out: Path = args.output
    out.mkdir(parents=True, exist_ok=True)
    steps = _Steps()
    print(f"[demo] writing everything to {out.resolve()}", flush=True)

    from cellvit_trt.synthetic import write_synthetic_slide

    side = args.tiles * (args.tile_size - TILE_OVERLAP)  # exactly `tiles` x `tiles` tiles at stride
    slide = write_synthetic_slide(
        out / "slide" / "synthetic-slide.svs", width=side, height=side, mpp=0.25, seed=args.seed
    )
    steps.done("synthetic slide", f"{side}x{side} px, {slide.n_cells} nuclei")

    from cellvit_trt.export import ExportSettings, export

    checkpoint = demo_checkpoint_path()
    graph = out / "model" / f"{checkpoint.stem}.fp32.t{args.tile_size}.onnx"
    exported = export(
        ExportSettings(
            checkpoint=checkpoint,
            output=graph,
            precision="fp32",
            tile_size=args.tile_size,
            gate_tiles=2,
            gate_batch=1,
        )
    )
    gate_passed = exported.gate is None or exported.gate.passed
    steps.done("export + parity gate", f"{graph.name}, gate {'passed' if gate_passed else 'FAILED'}")

    from cellvit_trt.runtime.backends import open_backend
    from cellvit_trt.runtime.job import run_input
    from cellvit_trt.runtime.settings import RunSettings

    backend = open_backend(graph, args.backend, batch=args.batch)
    settings = RunSettings(
        input=slide.slide,
        model=str(graph),
        output=out / "run",
        backend=args.backend,
        batch=args.batch,
        outputs=["geojson", "cells", "table", "tissue", "overlay", "summary"],
    )
    with backend:
        result = run_input(slide.slide, settings, backend, out_dir=out / "run", replace_other=True)
        kind = backend.kind
        magnification = backend.meta.magnification
    stats = result.stats
    steps.done(
        "run (tiles -> cells)",
        f"{kind}: {stats.tiles} tiles, {result.cells} cells, {stats.tiles_per_s:.2f} tiles/s",
    )

    validation = validate_against_truth(slide, out / "run", magnification)
    write_json(out / "validation.json", validation)
    d = validation["dataset"]
    steps.done("validation", f"bPQ {_f(d['bPQ'])}, mPQ {_f(d['mPQ'])}, F1 {_f(d['f1'])}")

    from cellvit_trt.bench.measure import slide_projection
    from cellvit_trt.bench.report import write_chart

    timing = {
        **stats.to_dict(),
        "tiles_per_s": stats.tiles_per_s,
        "backend_wait_fraction": stats.backend_wait_fraction,
    }
    bench = {
        "model": str(graph),
        "backend": {"backend": kind},
        "end_to_end": {"input": str(slide.slide), "cells": result.cells, "timing": timing},
        "projection": {
            **slide_projection(stats.tiles_per_s, 225.0, 0.25, args.tile_size - TILE_OVERLAP),
            "basis": "end-to-end",
        },
    }
    write_json(out / "bench.json", bench)
    write_chart(bench, out / "bench.png")
    steps.done("benchmark summary")

    run_dir = out / "run"
    files = {
        "slide": slide.slide,
        "ground truth": slide.cells_path,
        "ONNX graph": graph,
        "QuPath GeoJSON": run_dir / "cells.geojson",
        "upstream cells.json": run_dir / "cells.json",
        "cell table": run_dir / "cells.csv",
        "tissue per tile": run_dir / "tissue_tiles.csv",
        "overlay": run_dir / "overlay.png",
        "run summary": run_dir / "summary.json",
        "validation": out / "validation.json",
        "benchmark": out / "bench.json",
        "benchmark chart": out / "bench.png",
        "report": out / "report.md",
    }
    facts = {
        "command": _command(args),
        "tile_size": args.tile_size,
        "slide": {"width": side, "height": side, "cells": slide.n_cells},
        "export": {"precision": "fp32", "gate_passed": gate_passed},
        "run": {"backend": kind, "cells": result.cells, "timing": timing},
        "validation": validation,
        "steps": steps.times,
        "files": {k: str(v) for k, v in files.items() if v.exists() or k == "report"},
    }
    text = _report(facts)
    with atomic_open(out / "report.md", "w", encoding="utf-8") as fh:
        fh.write(text)
    print()
    print(text)
    return 0 if gate_passed else 1
