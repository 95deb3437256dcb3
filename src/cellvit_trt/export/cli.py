"""`cellvit-trt export CHECKPOINT [-o graph.onnx] [--precision fp32|fp16|int8] ...`

Every option can also come from a YAML file (`--config`, section `export:`); flags override the file.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from cellvit_trt.argtypes import nonnegative_int, positive_float, positive_int
from cellvit_trt.config import add_config_argument, resolve
from cellvit_trt.errors import UsageError


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "checkpoint",
        nargs="?",
        type=Path,
        default=None,
        help="CellViT checkpoint (.pth), or 'demo' (the shipped tiny model trained on synthetic H&E)",
    )
    p.add_argument(
        "-o",
        "--output",
        type=Path,
        default=None,
        help="graph to write (default: <checkpoint>.<precision>.t<tile>.onnx beside the checkpoint)",
    )
    p.add_argument(
        "--precision",
        choices=("fp32", "fp16", "int8"),
        default=None,
        help="precision written into the graph (default fp16; int8 needs --calibration)",
    )
    p.add_argument(
        "--tile-size",
        dest="tile_size",
        type=positive_int,
        default=None,
        help="fixed tile size in pixels, a multiple of 16 (default 1024)",
    )
    p.add_argument(
        "--overlap",
        type=nonnegative_int,
        default=None,
        help="tile overlap recorded in the metadata (default 64)",
    )
    p.add_argument(
        "--target-mpp",
        dest="target_mpp",
        type=positive_float,
        default=None,
        help="microns per pixel the graph expects (metadata; default 0.25)",
    )
    p.add_argument(
        "--hv-dtype",
        dest="hv_dtype",
        choices=("float16", "float32"),
        default=None,
        help="dtype of the hv output (default float16)",
    )
    p.add_argument(
        "--tokens",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="also output the encoder token map (float16) for cell embeddings",
    )
    p.add_argument("--opset", type=positive_int, default=None, help="ONNX opset (default 17; 19 for int8)")
    p.add_argument(
        "--fp32-attention-softmax",
        dest="fp32_attention_softmax",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="FP16 recipe: keep the attention softmax in FP32 too (breaks TensorRT MHA fusion)",
    )
    p.add_argument(
        "--calibration",
        type=Path,
        default=None,
        help="int8: folder of H&E images/tiles, an image, a slide, or a folder of slides",
    )
    p.add_argument(
        "--calibration-tiles",
        dest="calibration_tiles",
        type=positive_int,
        default=None,
        help="int8: number of calibration tiles (default 500, the recommended minimum)",
    )
    p.add_argument(
        "--calibration-method",
        dest="calibration_method",
        choices=("minmax", "percentile", "entropy"),
        default=None,
        help="int8: activation range estimator (default minmax)",
    )
    p.add_argument(
        "--calibration-batch",
        dest="calibration_batch",
        type=positive_int,
        default=None,
        help="int8: tiles per calibration step (memory grows with it; default 1)",
    )
    p.add_argument(
        "--gate",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="run the parity gate against the PyTorch FP32 model (default on)",
    )
    p.add_argument(
        "--gate-tiles",
        dest="gate_tiles",
        type=positive_int,
        default=None,
        help="synthetic H&E tiles for the gate (default: sized from the precision's thresholds and "
        "statistics, see docs/export.md)",
    )
    p.add_argument(
        "--keep-failed",
        dest="keep_failed",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="keep a graph that fails the gate as <name>.failed.onnx (default on)",
    )
    p.add_argument(
        "--external-data",
        dest="external_data",
        choices=("auto", "always", "never"),
        default=None,
        help="weights in a separate <graph>.onnx.data file (auto: above 1.8 GB, e.g. SAM-H)",
    )
    p.add_argument(
        "--seed", type=nonnegative_int, default=None, help="seed of the calibration and gate tile sampling"
    )
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    add_config_argument(p)


def default_output(checkpoint: Path, precision: str, tile: int) -> Path:
    return checkpoint.with_name(f"{checkpoint.stem}.{precision}.t{tile}.onnx")


def run(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from cellvit_trt.export.settings import ExportSettings

    s = resolve(ExportSettings, args, section="export")
    if s.checkpoint is None:
        raise UsageError("give a checkpoint (positional argument or `export.checkpoint` in --config)")
    if str(s.checkpoint) == "demo":  # the shipped tiny demo model, as `run -m demo` takes it
        from cellvit_trt.data import demo_checkpoint_path

        s = replace(s, checkpoint=Path(demo_checkpoint_path()), output=s.output or Path("demo.onnx"))
    if s.output is None:
        s = replace(s, output=default_output(Path(s.checkpoint), s.precision, s.tile_size))
    from cellvit_trt.export.exporter import export

    result = export(s)
    if getattr(args, "json", False):
        print(
            json.dumps(
                {
                    "graph": str(result.path),
                    "metadata": result.metadata,
                    "timings": result.timings,
                    "gate": result.gate.to_dict() if result.gate else None,
                },
                indent=2,
            )
        )
        return 0
    print(
        f"wrote {result.path} ({result.summary['size_bytes'] / 1e6:.1f} MB, {s.precision}, "
        f"tile {s.tile_size}, "
        f"opset {s.resolved_opset}{', external data' if result.summary.get('external_data') else ''})"
    )
    if result.gate is not None:
        print(result.gate.format())
    else:
        print("parity gate: skipped (--no-gate)")
    t = result.timings
    print(
        f"time: build {t.get('build_s')} s, gate {t.get('gate_s', 0)} s; "
        f"peak RSS {t.get('peak_rss_mb', 0):.0f} MB"
    )
    return 0
