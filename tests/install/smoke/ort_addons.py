"""`ort,bench,parquet,serve`: benchmark the demo graph (report + chart), write cells.parquet, serve a tile."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

from _smoke import BIN, cli, data, must, say

graph, tile = data("SMOKE_GRAPH"), data("SMOKE_REAL_TILE")
if graph is None:
    raise SystemExit("the demo graph was not prepared")
cli(
    "bench",
    graph,
    "--warmup",
    "0.2",
    "--iterations",
    "3",
    "--no-e2e",
    "--post-threads",
    "1",
    "--json",
    "b.json",
    "--chart",
    "b.png",
)
must(Path("b.png").stat().st_size > 1000, "bench chart written (matplotlib)")
if tile:
    cli("run", tile, "-m", graph, "--mpp", "0.25", "-o", "out", "-q", "--outputs", "table")
    import pyarrow.parquet as pq

    table = pq.read_table(next(Path("out").rglob("cells.parquet")))
    must(table.num_rows > 0 and "type_name" in table.column_names, f"cells.parquet: {table.num_rows} rows")
if tile:  # the scanner service: one real tile streamed over a Unix socket, cells back, outputs written
    import numpy as np
    from PIL import Image

    from cellvit_trt.serve.client import ScannerClient

    rgb = np.asarray(Image.open(tile).convert("RGB"))
    sock = Path("serve.sock").resolve()
    server = subprocess.Popen(
        [BIN / "cellvit-trt", "serve", "-m", graph, "-o", "served", "--listen", f"unix://{sock}"]
    )
    try:
        with ScannerClient(f"unix://{sock}") as client:
            deadline = time.monotonic() + 600
            while True:  # the server warms its backend before it reports SERVING
                try:
                    if client.health(timeout=5) == "SERVING":
                        break
                except Exception:
                    pass
                if server.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"serve did not become SERVING (exit {server.poll()})")
                time.sleep(0.5)
            got: list[dict] = []
            slide = client.open_slide(
                "tile", rgb.shape[1], rgb.shape[0], 0.25, on_cells=lambda cells, t: got.extend(cells)
            )
            slide.send_rgb(0, 0, rgb)
            result = slide.close(timeout=600)
        must(result.cells_total > 0 and len(got) == result.cells_total, f"serve: {len(got)} cells streamed")
        must(any(Path("served").rglob("cells.geojson")), "serve: the slide's outputs written")
    finally:
        server.terminate()
        server.wait(timeout=60)
say("ort,bench,parquet,serve install: all checks passed")
