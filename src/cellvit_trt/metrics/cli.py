"""`cellvit-trt validate`: a candidate deployment vs the FP32 PyTorch reference (and ground truth if known).

  cellvit-trt validate --candidate cellvit.int8.onnx --reference model.pth --data pannuke/fold2 --limit 256
  cellvit-trt validate --candidate model.engine --reference model.pth --data slide.svs --json out/val.json
  cellvit-trt validate --candidate m.fp16.onnx --candidate m.int8.onnx --reference m.pth --data synthetic:32
  cellvit-trt validate --candidate torch-cuda --candidate-precision fp16 --reference m.pth --data synthetic:8

Several --candidate options share one reference pass. Exit status: 0 when every gated agreement metric of
every candidate meets the thresholds of its precision (gate_thresholds.yaml of the export stage, or
--thresholds), 3 when one does not, 1 on an error. The JSON holds one report, or {"passed", "reports"}
for several candidates.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

from cellvit_trt.argtypes import nonnegative_int, positive_float, positive_int
from cellvit_trt.config import add_config_argument, resolve, to_dict

EXIT_BELOW_THRESHOLDS = 3


@dataclasses.dataclass(frozen=True)
class ValidateSettings:
    candidate: list[str] = dataclasses.field(default_factory=list)
    reference: str | None = None
    reference_device: str = "auto"
    data: str = "synthetic:16"
    limit: int = 64
    backend: str = "auto"
    batch: int = 4
    precision: str | None = None
    candidate_precision: str | None = None
    thresholds: Path | None = None
    magnification: float | None = None
    tile_size: int | None = None
    seed: int = 0
    json: Path | None = None

    def validate(self) -> None:
        if self.reference_device != "auto" and not self.reference_device.startswith(("cpu", "cuda")):
            raise ValueError(
                f"reference_device: expected auto, cpu or cuda[:N], got {self.reference_device!r}"
            )
        if self.limit < 0:
            raise ValueError(f"limit: expected >= 0 (0 = every tile of a PanNuke fold), got {self.limit}")
        if self.batch < 1:
            raise ValueError(f"batch: expected >= 1, got {self.batch}")
        if self.precision is not None and self.precision not in ("fp32", "fp16", "int8"):
            raise ValueError(f"precision: expected fp32, fp16 or int8, got {self.precision!r}")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = __doc__.split("\n\n", 1)[1]
    add_config_argument(parser)
    parser.add_argument(
        "--candidate",
        action="append",
        help="engine (.engine/.plan), ONNX graph, checkpoint, 'demo', or a backend "
        "name (torch, torch-cuda, onnxruntime, tensorrt) run on the --reference checkpoint; repeatable",
    )
    parser.add_argument("--reference", help="checkpoint of the FP32 PyTorch reference (.pth)")
    parser.add_argument(
        "--reference-device",
        dest="reference_device",
        help="device of the FP32 reference: auto (a CUDA GPU when PyTorch sees one), cpu, cuda[:N]",
    )
    parser.add_argument(
        "--data",
        help="PanNuke fold folder (images.npy, masks.npy, types.npy), an image, a slide, "
        "a folder of images, or 'synthetic:N' (default synthetic:16)",
    )
    parser.add_argument(
        "--limit",
        type=nonnegative_int,
        help="tiles to compare, spread evenly (0 = the whole PanNuke fold; default 64)",
    )
    parser.add_argument(
        "--backend",
        help="backend for a candidate file (auto, tensorrt, onnxruntime, torch, torch-cuda; default auto)",
    )
    parser.add_argument("--batch", type=positive_int, help="tiles per inference call (default 4)")
    parser.add_argument(
        "--precision",
        help="thresholds to apply: fp32, fp16 or int8 (default: the candidate's graph metadata, else fp32)",
    )
    parser.add_argument(
        "--candidate-precision",
        dest="candidate_precision",
        help="precision for a backend-name candidate (e.g. fp16 for torch-cuda autocast)",
    )
    parser.add_argument("--thresholds", type=Path, help="YAML thresholds file (default: the export gate's)")
    parser.add_argument(
        "--magnification", type=positive_float, help="override the model's magnification (40 or 20)"
    )
    parser.add_argument(
        "--tile-size",
        dest="tile_size",
        type=positive_int,
        help="tile of a checkpoint/backend-name candidate (graphs and engines have their own; default: the "
        "data's tile, else 1024)",
    )
    parser.add_argument("--seed", type=nonnegative_int, help="seed of synthetic tiles (default 0)")
    parser.add_argument("--json", type=Path, help="write the full report as JSON (atomic)")


def run(args: argparse.Namespace) -> int:
    from cellvit_trt.errors import UsageError
    from cellvit_trt.io import write_json
    from cellvit_trt.metrics.validate import validate_all

    s = resolve(ValidateSettings, args, section="validate")
    if not s.candidate:  # may come from --config, so only known after resolve (exit 2 all the same)
        raise UsageError(
            "give --candidate (an engine, an ONNX graph, a checkpoint or a backend name) or "
            "`validate.candidate` in --config"
        )
    reports = validate_all(
        s.candidate,
        s.reference,
        s.data,
        limit=s.limit,
        backend=s.backend,
        batch=s.batch,
        precision=s.precision,
        candidate_precision=s.candidate_precision,
        thresholds=s.thresholds,
        magnification=s.magnification,
        seed=s.seed,
        tile_size=s.tile_size,
        reference_device=s.reference_device,
    )
    print("\n\n".join(r.format() for r in reports))
    passed = all(r.passed for r in reports)
    if s.json is not None:
        if len(reports) == 1:
            doc = {**reports[0].to_dict(), "settings": to_dict(s)}
        else:
            doc = {"passed": passed, "reports": [r.to_dict() for r in reports], "settings": to_dict(s)}
        write_json(s.json, doc)
        print(f"report written to {s.json}", file=sys.stderr)
    return 0 if passed else EXIT_BELOW_THRESHOLDS
