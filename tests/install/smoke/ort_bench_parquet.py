"""`ort,bench,parquet`: benchmark the demo graph (report + chart) and write cells.parquet."""

from __future__ import annotations

from pathlib import Path

from _smoke import cli, data, must, say

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
say("ort,bench,parquet install: all checks passed")
