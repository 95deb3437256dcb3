"""`cellvit-trt run`: segment slides and images (files, folders, globs, manifests) and write the cells.

    cellvit-trt run slide.svs -m cellvit-256.engine -o results/
    cellvit-trt run slides/ more/*.ndpi cases.csv -m model.onnx --providers cuda cpu --outputs geojson summary
    cellvit-trt run slides/ --resume                         # continue an interrupted batch
    cellvit-trt run slide.tiff --config run.yaml             # every option may sit in the YAML `run:` section
    cellvit-trt run slides/ -o /shared/out --ray auto        # on a Ray cluster (docs/scale-out.md)

Planning (which inputs, which output folder each) is `runtime.inputs`; the batch and `run.json` are
`runtime.batch`; one input is `runtime.job.run_input`; `--ray` hands the same plan to `cellvit_trt.scale`.

Exit codes: 0 every input ok, 1 an error (some input failed: see run.json; or a bad model/setting),
2 usage, 130 interrupted (Ctrl-C or SIGTERM).
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import signal
import sys
from pathlib import Path

from cellvit_trt.argtypes import fraction, nonnegative_float, nonnegative_int, positive_float, positive_int
from cellvit_trt.config import add_config_argument

log = logging.getLogger("cellvit_trt.run")


def add_arguments(p: argparse.ArgumentParser) -> None:
    from cellvit_trt.runtime.settings import OUTPUTS  # light module: no numpy-heavy imports

    p.add_argument(
        "input",
        nargs="*",
        default=None,
        help="slides, images, folders of them, globs ('slides/**/*.svs') or manifests (.txt/.csv of paths)",
    )
    p.add_argument(
        "-m",
        "--model",
        default=None,
        help="TensorRT engine, ONNX graph, CellViT checkpoint, or 'demo' (default: the demo model)",
    )
    p.add_argument("-o", "--output", type=Path, default=None, help="output folder (default: cellvit-out)")
    p.add_argument(
        "--backend",
        default=None,
        choices=["auto", "tensorrt", "onnxruntime", "torch", "torch-cuda"],
        help="inference backend (default: auto = TensorRT with a GPU, else ONNX Runtime, else PyTorch)",
    )
    p.add_argument(
        "-b",
        "--batch",
        type=positive_int,
        default=None,
        help="tiles per batch (default: chosen from the memory budget and the model's measured footprint: "
        "up to 8 on a GPU, 1 on a CPU; engines: <= profile max)",
    )
    p.add_argument(
        "--max-memory",
        dest="max_memory",
        default=None,
        metavar="SIZE",
        help="host memory the run may take, e.g. 8G or 1500M (default: what is available, cgroup limits "
        "included); a batch that cannot fit fails before the run",
    )
    p.add_argument(
        "-j",
        "--workers",
        type=nonnegative_int,
        default=None,
        help="post-processing threads (default: CPU count)",
    )
    p.add_argument(
        "--readers",
        type=nonnegative_int,
        default=None,
        help="tile reading threads (default: 1 on CPU, up to 4 with a GPU backend)",
    )
    p.add_argument(
        "--in-flight", dest="in_flight", type=positive_int, default=None, help="batches in flight (default 2)"
    )
    p.add_argument(
        "--queue-size", dest="queue_size", type=positive_int, default=None, help="bound of inter-stage queues"
    )
    p.add_argument(
        "--precision",
        default=None,
        choices=["fp32", "fp16"],
        help="PyTorch backends, or the graph exported from a checkpoint",
    )
    p.add_argument(
        "--providers",
        nargs="+",
        default=None,
        metavar="EP",
        help="ONNX Runtime execution providers in order: cpu, cuda, tensorrt, or 'auto'",
    )
    p.add_argument(
        "--threads", type=nonnegative_int, default=None, help="intra-op threads of ONNX Runtime / PyTorch"
    )
    p.add_argument("--device", type=nonnegative_int, default=None, help="CUDA device index (default 0)")
    p.add_argument(
        "--cuda-graphs",
        dest="cuda_graphs",
        action="store_true",
        default=None,
        help="TensorRT: replay CUDA graphs (helps small models at small batch)",
    )
    p.add_argument(
        "--trusted-keys",
        dest="trusted_keys",
        type=Path,
        default=None,
        metavar="DIR",
        help="run only TensorRT engines signed (build --sign) by a key among the *.pub files in DIR",
    )
    p.add_argument(
        "--tile-size",
        dest="tile_size",
        type=positive_int,
        default=None,
        help="tile size for checkpoints (graphs and engines carry their own; default 1024)",
    )
    p.add_argument(
        "--cache-dir", dest="cache_dir", type=Path, default=None, help="where exported graphs are kept"
    )
    p.add_argument(
        "--reader",
        default=None,
        choices=["auto", "openslide", "tiffslide"],
        help="slide reader (default auto: OpenSlide where it knows the format, else tiffslide)",
    )
    p.add_argument("--mpp", type=positive_float, default=None, help="override the input's microns per pixel")
    p.add_argument(
        "--target-mpp",
        dest="target_mpp",
        type=positive_float,
        default=None,
        help="override the model's microns per pixel (default from the model: 0.25 at x40)",
    )
    p.add_argument(
        "--no-tissue",
        dest="tissue",
        action="store_false",
        default=None,
        help="process every tile (no tissue detection)",
    )
    p.add_argument(
        "--tissue-threshold",
        dest="tissue_threshold",
        type=fraction,
        default=None,
        help="min tissue fraction of a tile (default 0.01)",
    )
    p.add_argument(
        "--max-pixels",
        dest="max_pixels",
        type=positive_int,
        default=None,
        help="refuse images decoded whole (PNG, JPEG, BMP, WebP, flat TIFF) above this many pixels "
        "(default 268435456 = 16384^2)",
    )
    p.add_argument(
        "--max-bad-tiles",
        dest="max_bad_tiles",
        type=fraction,
        default=None,
        help="fraction of a slide's tiles that may fail to decode (left out and reported); beyond it the "
        "input fails (default 0.01; 0: any corrupt tile fails the input)",
    )
    p.add_argument(
        "--max-slide-pixels",
        dest="max_slide_pixels",
        type=positive_int,
        default=None,
        help="refuse slides read region by region above this many level-0 pixels (default 2^36 = 262144^2)",
    )
    p.add_argument(
        "--outputs",
        nargs="+",
        default=None,
        choices=OUTPUTS,
        metavar="OUT",
        help=f"what to write: {', '.join(OUTPUTS)} (default: geojson cells table summary)",
    )
    p.add_argument("--resume", action="store_true", default=None, help="continue an interrupted run")
    p.add_argument(
        "--checkpoint-tiles",
        dest="checkpoint_tiles",
        type=positive_int,
        default=None,
        help="tiles per resume checkpoint (default 32)",
    )
    p.add_argument(
        "--checkpoint-seconds",
        dest="checkpoint_seconds",
        type=nonnegative_float,
        default=None,
        help="also commit the resume checkpoint after this many seconds (default 30; 0: after every tile)",
    )
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    add_config_argument(p)
    g = p.add_argument_group("scale-out on Ray (pip install 'cellvit-trt[ray]'; docs/scale-out.md)")
    g.add_argument(
        "--ray",
        nargs="?",
        const="local",
        default=None,
        metavar="ADDRESS",
        help="run the inputs on a Ray cluster, one slide per worker: no ADDRESS = start Ray on this machine "
        "(or join $RAY_ADDRESS), 'auto' = the cluster this node belongs to, ray://host:10001 = Ray Client",
    )
    g.add_argument(
        "--ray-cpus-per-slide",
        dest="ray_cpus_per_slide",
        type=positive_float,
        default=None,
        help="CPUs each slide's worker asks for (its post-processing threads; default 4, capped by the "
        "largest node); GPU backends also ask for one GPU",
    )
    g.add_argument(
        "--ray-workers",
        dest="ray_workers",
        type=positive_int,
        default=None,
        help="workers (actors) to start (default: as many as the cluster's resources place at once)",
    )
    g.add_argument(
        "--ray-retries",
        dest="ray_retries",
        type=nonnegative_int,
        default=None,
        help="times a slide is retried after its worker died (default 3; it resumes from its journal)",
    )


def _sigterm_as_interrupt() -> None:
    def handler(signum, frame):  # noqa: ARG001 - signal API
        raise KeyboardInterrupt

    try:
        signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread (embedded use): keep the default
        pass


def run(args: argparse.Namespace) -> int:
    from cellvit_trt.config import resolve, to_dict
    from cellvit_trt.errors import ConfigError
    from cellvit_trt.runtime.backends import check_outputs, open_run_backend
    from cellvit_trt.runtime.batch import LocalExecutor, RunRecord, run_batch
    from cellvit_trt.runtime.budget import plan_run_memory
    from cellvit_trt.runtime.inputs import plan_inputs
    from cellvit_trt.runtime.settings import RunSettings
    from cellvit_trt.scale.settings import ScaleSettings

    if not args.input:
        args.input = None  # nargs="*" gives []: let the YAML's `input:` apply
    try:
        scale = ScaleSettings.from_args(args)
    except ConfigError as exc:
        print(f"cellvit-trt run: error: {exc}", file=sys.stderr)
        return 2
    settings = resolve(RunSettings, args, section="run")
    specs = settings.input_specs()
    if not specs:
        print(
            "cellvit-trt run: error: no input given (slides, images, folders, globs or a manifest, "
            "or `input:` in --config)",
            file=sys.stderr,
        )
        return 2
    _sigterm_as_interrupt()
    quiet = bool(getattr(args, "quiet", False))
    plan = plan_inputs(specs, settings.output)
    if scale is not None:
        from cellvit_trt.scale import run_on_ray

        record = run_on_ray(plan, settings, scale, quiet=quiet)
    else:
        backend = open_run_backend(settings)
        memory_plan = plan_run_memory(backend, settings)
        print(f"cellvit-trt run: {memory_plan.describe()}", file=sys.stderr)
        settings = dataclasses.replace(settings, batch=memory_plan.batch)
        record = RunRecord(plan, settings=to_dict(settings))
        with backend:
            check_outputs(backend, settings.outputs, settings.model)
            executor = LocalExecutor(
                settings, backend, progress=False if quiet else None, memory_plan=memory_plan.to_dict()
            )
            run_batch(plan, executor, record)
    if record.failed:
        print(
            f"cellvit-trt run: {record.failed} of {len(record.plan.items)} inputs failed (see {record.path})",
            file=sys.stderr,
        )
        return 1
    return 0
