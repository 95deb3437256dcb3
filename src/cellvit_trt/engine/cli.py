"""`cellvit-trt build model.onnx`: build (or reuse) a verified TensorRT engine for an exported graph.

Every flag maps to a field of BuildSettings; a YAML file's `build:` section gives the rest (flags win).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from cellvit_trt.argtypes import int_range, nonnegative_int, positive_int
from cellvit_trt.config import add_config_argument, resolve


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("onnx", type=Path, help="deployment ONNX graph from `cellvit-trt export`")
    parser.add_argument(
        "-o",
        "--output",
        type=Path,
        default=None,
        help="engine path (default: <graph>.engine beside the ONNX); a .json sidecar goes with it",
    )
    add_config_argument(parser)
    g = parser.add_argument_group("profile")
    g.add_argument(
        "--min-batch", dest="min_batch", type=positive_int, default=None, help="smallest batch (default 1)"
    )
    g.add_argument(
        "--opt-batch",
        dest="opt_batch",
        type=positive_int,
        default=None,
        help="batch tuned for (default: max)",
    )
    g.add_argument(
        "--max-batch", dest="max_batch", type=positive_int, default=None, help="largest batch (default 8)"
    )
    g.add_argument(
        "--tile-size",
        dest="tile_size",
        type=positive_int,
        default=None,
        help="H=W for graphs exported with dynamic H/W (a fixed-size graph gives its own)",
    )
    g = parser.add_argument_group("builder")
    g.add_argument(
        "--workspace-mib",
        dest="workspace_mib",
        type=positive_int,
        default=None,
        help="tactic memory limit (default: 75%% of free device memory)",
    )
    g.add_argument(
        "--optimization-level",
        dest="optimization_level",
        type=int_range(0, 5),
        default=None,
        help="0 (fast build) .. 5 (slowest build, best engine); default 3",
    )
    g.add_argument(
        "--tf32",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="allow TF32 for FP32 layers (default on)",
    )
    g.add_argument("--max-aux-streams", dest="max_aux_streams", type=nonnegative_int, default=None)
    g.add_argument(
        "--max-num-tactics",
        dest="max_num_tactics",
        type=positive_int,
        default=None,
        help="fewer tactics: faster, leaner builds (low-memory Jetson)",
    )
    g.add_argument(
        "--detailed-profiling",
        dest="detailed_profiling",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="keep layer details for <engine>.layers.json (default on)",
    )
    g.add_argument(
        "--timing-cache",
        dest="timing_cache",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="reuse and extend the per-GPU timing cache (default on)",
    )
    g.add_argument("--timing-cache-dir", dest="timing_cache_dir", type=Path, default=None)
    g.add_argument(
        "--require-fused-attention",
        dest="require_fused_attention",
        action="store_true",
        default=None,
        help="fail when the layer information does not show fused attention",
    )
    g = parser.add_argument_group("portability and Jetson")
    g.add_argument(
        "--version-compatible",
        dest="version_compatible",
        action="store_true",
        default=None,
        help="engine runs on newer TensorRT of the same major (slower)",
    )
    g.add_argument("--exclude-lean-runtime", dest="exclude_lean_runtime", action="store_true", default=None)
    g.add_argument(
        "--hardware-compatibility",
        dest="hardware_compatibility",
        default=None,
        choices=["none", "ampere_plus", "same_compute_capability"],
    )
    g.add_argument(
        "--dla-core",
        dest="dla_core",
        type=nonnegative_int,
        default=None,
        help="Jetson: run supported layers on DLA core N (static batch), the rest on the GPU",
    )
    g.add_argument(
        "--gpu-fallback",
        dest="gpu_fallback",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="with --dla-core: let unsupported layers fall back to the GPU (default on)",
    )
    g.add_argument("--device", type=nonnegative_int, default=None, help="CUDA device index (default 0)")
    g = parser.add_argument_group("cache").add_mutually_exclusive_group()
    g.add_argument(
        "--rebuild",
        dest="rebuild",
        action="store_const",
        const="always",
        default=None,
        help="build even when a matching engine exists",
    )
    g.add_argument(
        "--no-rebuild",
        dest="rebuild",
        action="store_const",
        const="never",
        help="never build: verify the existing engine and fail if it does not fit",
    )
    parser.add_argument(
        "--sign",
        type=Path,
        default=None,
        metavar="KEY",
        help="sign the engine and its sidecar with this Ed25519 private key (PEM) into <engine>.sig, for "
        "devices that run only engines signed by a trusted key (run --trusted-keys)",
    )
    parser.add_argument("--json", action="store_true", help="print the result as JSON")


def _refuse_checkpoint(path: Path) -> None:
    """A checkpoint handed to `build` gets the command that makes the graph it needs."""
    from cellvit_trt.errors import InputError
    from cellvit_trt.runtime.backends import CHECKPOINT_SUFFIXES

    if path.suffix.lower() in CHECKPOINT_SUFFIXES:
        graph = path.with_suffix(".onnx")
        raise InputError(
            f"build {path}: this is a checkpoint; TensorRT builds from an ONNX graph, so export it first: "
            f"cellvit-trt export {path} --precision fp16 -o {graph} && cellvit-trt build {graph}"
        )


def run(args: argparse.Namespace) -> int:
    from cellvit_trt.engine.cache import ensure_engine
    from cellvit_trt.engine.settings import BuildSettings
    from cellvit_trt.engine.summary import summary_lines

    _refuse_checkpoint(Path(args.onnx))
    settings = resolve(BuildSettings, args, section="build")

    def progress(text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    verbose = getattr(args, "verbose", 0) > 1
    signature = None
    if getattr(args, "sign", None) is not None:
        from cellvit_trt.engine.signing import load_private_key

        load_private_key(args.sign)  # a bad key fails now, not after a long build
    artifact = ensure_engine(args.onnx, settings, verbose=verbose, progress=progress)
    if getattr(args, "sign", None) is not None:
        from cellvit_trt.engine.signing import sign_engine

        signature = sign_engine(artifact.path, args.sign)
    side = artifact.sidecar
    if args.json:
        print(
            json.dumps(
                {
                    "engine": str(artifact.path),
                    "key": artifact.key,
                    "built": artifact.built,
                    "reason": artifact.reason,
                    "io": side.get("io"),
                    "attention": side.get("build", {}).get("attention"),
                    "signature": str(signature) if signature else None,
                },
                indent=2,
            )
        )
        return 0
    action = f"built in {side['build']['seconds']:.1f} s" if artifact.built else "reused (cache hit)"
    print(f"engine: {artifact.path} ({action}, {side['engine']['size'] / 2**20:.1f} MiB)")
    if artifact.built and artifact.reason:
        print(f"why: {artifact.reason}")
    print(f"key: {artifact.key}")
    if signature is not None:
        print(f"signed: {signature}")
    for line in summary_lines(side):
        print(line)
    return 0
