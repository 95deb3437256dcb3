"""`ort` alone: inspect and run an ONNX graph of the demo model on a real H&E tile."""

from __future__ import annotations

import json
from pathlib import Path

from _smoke import cli, data, must, say

graph, tile, slide = data("SMOKE_GRAPH"), data("SMOKE_REAL_TILE"), data("SMOKE_SYNTHETIC_SLIDE")
if graph is None:
    raise SystemExit("the demo graph was not prepared")
cli("info", graph, says=("onnx", "class_names"))
if tile:
    out = cli(
        "run",
        tile,
        "-m",
        graph,
        "--mpp",
        "0.25",
        "-o",
        "out",
        "-q",
        "--outputs",
        "geojson",
        "table",
        "summary",
    )
    found = next(Path("out").rglob("cells.geojson"))
    features = json.loads(found.read_text())["features"]
    must(len(features) > 0, f"{len(features)} cells in {found}")
    must(any(Path("out").rglob("cells.csv")), "cells.csv written")
    must("cellvit-trt[parquet]" in out, "the missing Parquet output names its extra")
if slide:  # a pyramidal TIFF needs a slide reader: one line naming the extra
    cli("run", slide, "-m", graph, "-o", "out2", code=1, says=("cellvit-trt[slides]",))
say("ort install: all checks passed")
