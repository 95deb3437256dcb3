"""`ort,slides` (the README's install line): the demo graph on a real slide and a synthetic pyramidal TIFF."""

from __future__ import annotations

import json
from pathlib import Path

from _smoke import cli, data, must, say

graph = data("SMOKE_GRAPH")
if graph is None:
    raise SystemExit("the demo graph was not prepared")
# the real slide at 2 µm/px keeps the job short (12 tiles); the synthetic one at the model's 0.25
for name, extra in (("SMOKE_REAL_SLIDE", ("--target-mpp", "2.0")), ("SMOKE_SYNTHETIC_SLIDE", ())):
    slide = data(name)
    if slide is None:
        continue
    out = Path(f"out-{slide.stem}")
    cli("run", slide, "-m", graph, "-o", out, "-q", *extra, "--outputs", "geojson", "cells", "summary")
    summary = json.loads(next(out.rglob("summary.json")).read_text())
    must(
        summary.get("cells", 0) > 0 or json.loads(next(out.rglob("cells.geojson")).read_text())["features"],
        f"{slide.name}: cells found",
    )
say("ort,slides install: all checks passed")
