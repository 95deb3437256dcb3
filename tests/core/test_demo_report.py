"""The demo's report.md and the README quote every accuracy figure: bPQ, mPQ, F1 and the per-class table.

A summary that shows bPQ and F1 but hides a class at PQ 0.04 (the demo model's Epithelial) misleads; the
report must carry each class's PQ/F1 as measured, and the command that measured them.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import numpy as np

from cellvit_trt.demo import _command, _report
from cellvit_trt.metrics import Evaluator, Instances
from cellvit_trt.synthetic.tile import generate_tile

ROOT = Path(__file__).resolve().parents[2]


def _validation() -> dict:
    """A real evaluation: synthetic truth against a prediction that loses every fourth cell's class."""
    ev = Evaluator(magnification=40)
    for seed in (1, 2):
        t = generate_tile(256, seed=seed).targets()
        pred_types = t.type_map.copy()
        drop = np.isin(t.inst_map, np.arange(1, t.inst_map.max() + 1, 4))
        pred_types[drop] = np.where(pred_types[drop] == 1, 2, 1)
        ev.add(Instances.from_maps(t.inst_map, t.type_map), Instances.from_maps(t.inst_map, pred_types))
    return ev.result()


def _facts(validation: dict, command: str) -> dict:
    timing = {"tiles": 9, "wall_s": 30.0, "tiles_per_s": 0.3, "backend_wait_fraction": 0.01}
    return {
        "command": command,
        "tile_size": 1024,
        "slide": {"width": 2880, "height": 2880, "cells": 5000},
        "export": {"precision": "fp32", "gate_passed": True},
        "run": {"backend": "onnxruntime", "cells": 4900, "timing": timing},
        "validation": validation,
        "steps": {"run": 30.0},
        "files": {"report": "demo_out/report.md"},
    }


def test_report_has_mpq_and_a_row_per_class_with_the_measured_values():
    v = _validation()
    text = _report(_facts(v, "cellvit-trt demo"))
    d = v["dataset"]
    assert f"mPQ {d['mPQ']:.3f}" in text and f"bPQ {d['bPQ']:.3f}" in text and f"F1 {d['f1']:.3f}" in text
    assert "`cellvit-trt demo`" in text
    rows = {r.split("|")[1].strip(): r for r in text.splitlines() if r.startswith("| ") and "---" not in r}
    assert set(v["per_class"]) <= set(rows), "every class has a row"
    for name, c in v["per_class"].items():
        cells = [x.strip() for x in rows[name].split("|")[1:-1]]
        pq = "n/a" if c["pq"] is None else f"{c['pq']:.3f}"
        f1 = "n/a" if c["f1"] is None else f"{c['f1']:.3f}"
        assert cells[1:3] == [pq, f1], rows[name]


def test_report_names_the_command_with_its_non_default_options():
    args = argparse.Namespace(output=Path("x"), tiles=2, tile_size=512, backend="auto", batch=2, seed=7)
    assert _command(args) == "cellvit-trt demo -o x --tiles 2 --tile-size 512"


def test_readme_quotes_the_demos_mpq_and_per_class_table_with_the_command():
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## Set-up") : readme.index("## Install")]
    assert re.search(r"mPQ \d\.\d{3}", section), "the demo's mPQ"
    assert "cellvit-trt demo" in section
    for name in ("Neoplastic", "Inflammatory", "Connective", "Dead", "Epithelial"):
        assert re.search(rf"\| {name} \| \d\.\d{{3}} \| \d\.\d{{3}} \|", section), f"{name}: PQ and F1"
