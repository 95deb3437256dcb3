"""`slides` alone: read the real Aperio slide and a synthetic pyramidal TIFF through the runtime's sources."""

from __future__ import annotations

from _smoke import cli, data, must, say

from cellvit_trt.runtime.sources import open_source

for name in ("SMOKE_REAL_SLIDE", "SMOKE_SYNTHETIC_SLIDE"):
    path = data(name)
    if path is None:
        continue
    with open_source(path, target_mpp=0.5, tile_size=256, overlap=64) as src:
        first = next(iter(src.tiles()))
        must(first.image.shape == (256, 256, 3), f"{path.name}: read a 256² tile ({src.info.reader})")
    graph = data("SMOKE_GRAPH")
    if graph:  # no backend in this install: one line naming the extra
        cli("run", path, "-m", graph, "-o", "out", code=1, says=("cellvit-trt[ort]",))
say("slides install: all checks passed")
