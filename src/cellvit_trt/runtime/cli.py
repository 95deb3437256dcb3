"""`cellvit-trt run`: segment a slide, an image or a folder of images and write the cells.

    cellvit-trt run slide.svs -m cellvit-256.engine -o results/
    cellvit-trt run slides/ -m model.onnx --backend onnxruntime --providers cuda cpu --outputs geojson summary
    cellvit-trt run slide.tiff --resume                      # continue an interrupted run
    cellvit-trt run slide.tiff --config run.yaml             # every option may sit in the YAML `run:` section

Exit codes: 0 ok, 1 error (named file/tile/setting), 2 usage, 130 interrupted (Ctrl-C or SIGTERM).
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import signal
import sys
from pathlib import Path

from cellvit_trt.config import add_config_argument

log = logging.getLogger("cellvit_trt.run")


def add_arguments(p: argparse.ArgumentParser) -> None:
    from cellvit_trt.runtime.settings import OUTPUTS  # light module: no numpy-heavy imports

    p.add_argument("input", nargs="?", type=Path, default=None, help="slide, image, or folder of images")
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
        type=int,
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
        "-j", "--workers", type=int, default=None, help="post-processing threads (default: CPU count)"
    )
    p.add_argument(
        "--readers",
        type=int,
        default=None,
        help="tile reading threads (default: 1 on CPU, up to 4 with a GPU backend)",
    )
    p.add_argument(
        "--in-flight", dest="in_flight", type=int, default=None, help="batches in flight (default 2)"
    )
    p.add_argument(
        "--queue-size", dest="queue_size", type=int, default=None, help="bound of inter-stage queues"
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
    p.add_argument("--threads", type=int, default=None, help="intra-op threads of ONNX Runtime / PyTorch")
    p.add_argument("--device", type=int, default=None, help="CUDA device index (default 0)")
    p.add_argument(
        "--cuda-graphs",
        dest="cuda_graphs",
        action="store_true",
        default=None,
        help="TensorRT: replay CUDA graphs (helps small models at small batch)",
    )
    p.add_argument(
        "--tile-size",
        dest="tile_size",
        type=int,
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
    p.add_argument("--mpp", type=float, default=None, help="override the input's microns per pixel")
    p.add_argument(
        "--target-mpp",
        dest="target_mpp",
        type=float,
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
        type=float,
        default=None,
        help="min tissue fraction of a tile (default 0.01)",
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
        type=int,
        default=None,
        help="tiles per resume checkpoint (default 32)",
    )
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    add_config_argument(p)


def _sigterm_as_interrupt() -> None:
    def handler(signum, frame):  # noqa: ARG001 - signal API
        raise KeyboardInterrupt

    try:
        signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread (embedded use): keep the default
        pass


def run(args: argparse.Namespace) -> int:
    from cellvit_trt.config import resolve, to_dict
    from cellvit_trt.errors import CellViTTRTError, ConfigError
    from cellvit_trt.io import write_json
    from cellvit_trt.runtime.backends import open_backend
    from cellvit_trt.runtime.budget import GPU_PREFERRED_BATCH, plan_run
    from cellvit_trt.runtime.job import run_input
    from cellvit_trt.runtime.settings import RunSettings
    from cellvit_trt.runtime.sources import expand_inputs

    settings = resolve(RunSettings, args, section="run")
    if settings.input is None:
        print(
            "cellvit-trt run: error: no input given (a slide, image or folder, or `input:` in --config)",
            file=sys.stderr,
        )
        return 2
    _sigterm_as_interrupt()
    inputs = expand_inputs(settings.input)
    if not inputs:
        print(f"cellvit-trt run: error: {settings.input}: no images found", file=sys.stderr)
        return 1
    spec = dict(
        backend=settings.backend,
        batch=settings.batch or GPU_PREFERRED_BATCH,  # the most a backend/engine is built for
        tile_size=settings.tile_size,
        precision=settings.precision,
        providers=settings.providers,
        threads=settings.threads,
        device=settings.device,
        cuda_graphs=settings.cuda_graphs,
        slots=settings.in_flight,
        tokens="embeddings" in settings.outputs,
        cache_dir=settings.cache_dir,
    )
    backend = open_backend(settings.model, **spec)
    plan = plan_run(
        backend,
        {"model": settings.model, **spec},
        requested=settings.batch,
        max_memory=settings.max_memory,
        workers=settings.post_workers,
        readers=settings.reader_threads(backend.kind),
        queue_size=settings.queue_size,
        in_flight=min(settings.in_flight, backend.max_in_flight),
        cache_dir=settings.cache_dir,
    )
    print(f"cellvit-trt run: {plan.describe()}", file=sys.stderr)
    settings = dataclasses.replace(settings, batch=plan.batch)
    progress = False if getattr(args, "quiet", False) else None
    index: list[dict] = []
    with backend:
        if "embeddings" in settings.outputs and "tokens" not in backend.output_names:
            raise ConfigError(
                f"outputs: 'embeddings' needs a model with a 'tokens' output; {settings.model} "
                f"has {list(backend.output_names)} (export with --tokens)"
            )
        for path in inputs:
            try:
                res = run_input(
                    path,
                    settings,
                    backend,
                    out_dir=settings.output / path.stem,
                    progress=progress,
                    memory_plan=plan.to_dict(),
                )
            except CellViTTRTError as exc:
                if len(inputs) == 1:
                    raise
                index.append({"input": str(path), "ok": False, "error": str(exc)})
                print(f"cellvit-trt run: error: {exc}", file=sys.stderr)
                continue
            if res.skipped:
                index.append(
                    {
                        "input": str(path),
                        "ok": True,
                        "output": str(res.out_dir),
                        "cells": res.cells,
                        "tiles": res.tiles_planned,
                        "skipped": "already complete",
                    }
                )
                print(f"{path}: already complete in {res.out_dir} ({res.cells} cells); skipped (--resume)")
                continue
            st = res.stats
            index.append(
                {
                    "input": str(path),
                    "ok": True,
                    "output": str(res.out_dir),
                    "cells": res.cells,
                    "tiles": res.tiles_processed + res.tiles_resumed,
                    "seconds": round(st.wall_s, 3),
                }
            )
            print(
                f"{path}: {res.cells} cells, {res.tiles_processed} tiles "
                f"({res.tiles_resumed} resumed) in {st.wall_s:.1f} s = {st.tiles_per_s:.2f} tiles/s, "
                f"backend waited for input {100 * st.backend_wait_fraction:.0f}% -> {res.out_dir}"
            )
    failed = sum(not e["ok"] for e in index)
    if len(inputs) > 1:  # a folder: one index of what was done (upstream's processed_files.json, atomically)
        write_json(
            settings.output / "run.json", {"inputs": index, "failed": failed, "settings": to_dict(settings)}
        )
    if failed:
        print(f"cellvit-trt run: {failed} of {len(inputs)} inputs failed", file=sys.stderr)
        return 1
    return 0
