"""Core install (no extra): the CLI, `info` on an engine sidecar, post-processing and GeoJSON from Python, and
one-line errors that name the extra wherever a command needs one."""

from __future__ import annotations

import json

from _smoke import cli, data, must, say

from cellvit_trt.cli import COMMANDS

cli("--help")
for name in COMMANDS:  # every add_arguments imports with the core alone
    cli(name, "--help")

from cellvit_trt.engine.sidecar import write_engine  # noqa: E402

meta = {"name": "demo", "tile_size": 256, "nuclei_names": ["Background", "Neoplastic"]}
write_engine("m.engine", b"not a real plan", {"key": "k", "key_fields": {}, "onnx_metadata": meta})
cli("info", "m.engine", says=("engine", "key_fields"))

graph, checkpoint, tile = data("SMOKE_GRAPH"), data("SMOKE_CHECKPOINT"), data("SMOKE_REAL_TILE")
if graph:
    cli("info", graph, code=1, one_line=True, says=("pip install 'cellvit-trt[ort]'",))
    if tile:
        cli("run", tile, "-m", graph, "-o", "out", code=1, says=("cellvit-trt[ort]",))
if checkpoint:
    cli("info", checkpoint, code=1, one_line=True, says=("pip install 'cellvit-trt[export]'",))
    cli("export", checkpoint, "-o", "x.onnx", code=1, one_line=True, says=("cellvit-trt[export]",))

# Post-processing and GeoJSON from Python, as the README shows
import shapely  # noqa: E402

from cellvit_trt.kernels import PostProcessor  # noqa: E402
from cellvit_trt.runtime.writers import write_geojson  # noqa: E402
from cellvit_trt.synthetic.tile import generate_tile  # noqa: E402

t = generate_tile(256, seed=1).targets()
cells = PostProcessor().process_tile(t.binary, t.hv, t.type_map).cells
must(len(cells.id) > 20, f"post-processing found {len(cells.id)} cells on a synthetic tile")
write_geojson("cells.geojson", cells)
features = json.load(open("cells.geojson"))["features"]
polys = [shapely.geometry.shape(f["geometry"]) for f in features]
must(len(polys) == len(cells.id) and all(p.is_valid for p in polys), "one valid GeoJSON polygon per cell")
cli("synth", "tiles", "--out", "tiles", "--count", "1", "--size", "128")
say("core install: all checks passed")
