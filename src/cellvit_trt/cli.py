"""Command line: `cellvit-trt <command> ...`.

The CLI is a thin dispatcher. Each command lives in its stage's package as a module with
`add_arguments(parser)` and `run(args) -> int`; it is imported only when that command is used, so
`cellvit-trt --help` works with the core dependencies alone.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from cellvit_trt import __version__
from cellvit_trt.errors import CellViTTRTError, UsageError

# name -> (module, one-line help). Order is the order shown in --help.
COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("cellvit_trt.demo", "run the whole product on a synthetic slide with the shipped demo model"),
    "info": ("cellvit_trt.info", "show what a checkpoint, ONNX graph or engine holds"),
    "export": ("cellvit_trt.export.cli", "export a CellViT checkpoint to a deployment ONNX graph"),
    "build": ("cellvit_trt.engine.cli", "build a TensorRT engine from an exported ONNX graph"),
    "run": ("cellvit_trt.runtime.cli", "segment a slide, image(s) or tile folder and write cells"),
    "serve": (
        "cellvit_trt.serve.cli",
        "scanner integration service: stream a slide's tiles over gRPC, get cells back while scanning",
    ),
    "validate": (
        "cellvit_trt.metrics.cli",
        "compare a candidate (engine/graph/backend) with the FP32 reference",
    ),
    "bench": ("cellvit_trt.bench.cli", "measure throughput and latency of a deployment"),
    "train": ("cellvit_trt.training.cli", "train a CellViT model on synthetic or PanNuke-layout data"),
    "synth": (
        "cellvit_trt.synthetic.cli",
        "write synthetic H&E tiles or a pyramidal TIFF slide with ground truth",
    ),
}


def _parser(command: str | None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cellvit-trt",
        description="CellViT nuclei segmentation on NVIDIA hardware: export, build, run, validate, bench.",
    )
    parser.add_argument("--version", action="version", version=f"cellvit-trt {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv for debug)")
    sub = parser.add_subparsers(dest="command", metavar="command")
    parser.command_parsers = {}  # type: ignore[attr-defined]
    for name, (module, help_text) in COMMANDS.items():
        p = parser.command_parsers[name] = sub.add_parser(name, help=help_text, description=help_text)  # type: ignore[attr-defined]
        if name == command:
            importlib.import_module(module).add_arguments(p)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = next((a for a in argv if not a.startswith("-")), None)
    parser = _parser(command if command in COMMANDS else None)
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    logging.basicConfig(
        level=logging.WARNING - 10 * min(args.verbose, 2),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    module = importlib.import_module(COMMANDS[args.command][0])
    try:
        return int(module.run(args) or 0)
    except UsageError as exc:  # found after parsing (e.g. an input that may also come from --config)
        parser.command_parsers[args.command].print_usage(sys.stderr)
        print(f"cellvit-trt {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except CellViTTRTError as exc:
        print(f"cellvit-trt {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"cellvit-trt {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
