"""`export` alone: inspect and export the shipped demo checkpoint (parity gate included)."""

from __future__ import annotations

import json
from pathlib import Path

from _smoke import cli, data, must, say

checkpoint = data("SMOKE_CHECKPOINT")
if checkpoint is None:
    raise SystemExit("the demo checkpoint was not found")
cli("info", checkpoint, says=("checkpoint", "parameters"))
cli(
    "export",
    checkpoint,
    "--precision",
    "fp16",
    "--tile-size",
    "256",
    "-o",
    "m.onnx",
    says=("parity gate (fp16", "PASSED"),
)
must(Path("m.onnx").stat().st_size > 100_000, "m.onnx written")
meta = json.loads(cli("info", "m.onnx", "--json"))["metadata"]
must(meta.get("tile_size") == 256, "the graph's metadata says tile 256")
say("export install: all checks passed")
