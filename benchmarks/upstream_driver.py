"""Run upstream's own WSI pipeline (`cellvit==1.0.9`, `CellViTInference.process_wsi`) on a CPU.

Runs inside .venv-upstream (benchmarks/upstream_env.sh), never inside the project's environment, and is
started by benchmarks/bench_e2e_vs_upstream.py as a subprocess:

    .venv-upstream/bin/python benchmarks/upstream_driver.py SLIDE --checkpoint CK --outdir DIR \
        [--batch 8] [--cpu-count 4] [--ray-worker 1] [--graph] [--result result.json]

What runs is upstream's code as shipped: checkpoint loading and model construction
(`CellViTInference._load_model` / `_get_model`, from upstream's model cache folder), its transforms,
PathoPatcher's `LivePatchWSIDataset` / `LivePatchWSIDataloader` (OpenSlide DeepZoom tiling, Otsu prefilter,
LANCZOS rescaling), the model forward with `retrieve_tokens=True`, `apply_softmax_reorder`, the Ray
`BatchPoolingActor`s (post-processing, globalisation, cell-token pooling), `OverlapCellCleaner`, the grid
realignment and upstream's own `cells.json` / `cell_detection.json` (+ `cells.pt` with --graph) writers.

Upstream 1.0.9 cannot start on a machine without a CUDA GPU, for three reasons (line numbers of the 1.0.9
wheel):
1. `cellvit/utils/ressource_manager.py`, `SystemConfiguration.__init__`, lines 713-715: with no CUDA device
   `gpu_count` is 0, so `gpu_index 0 >= gpu_count` raises `SystemError("Requesting non existing gpu index")`
   (and line 715 reads `gpu_resources["devices"][0]["total_memory_gb"]`). Its CLI fails one step earlier:
   `cellvit/inference/cli.py`, `InferenceWSIParser.__set_gpu`, lines 186-188, asserts
   `0 <= gpu < torch.cuda.device_count()`.
2. `cellvit/inference/inference.py`, `CellViTInference.__init__`, line 188: the device is hard-coded
   `f"cuda:{gpu_index}"`; `_load_model` line 241 (`self.model.to(self.device)`) and `process_wsi` line 762
   (`batch[0].to(self.device)`) then need CUDA.
3. (AMP checkpoints only) `process_wsi` line 778 runs the model under `torch.autocast(device_type="cuda")`.
   With no GPU, PyTorch disables that autocast with a warning, so the model runs in FP32.
Two more problems are not about the GPU. On fewer than 8 CPUs upstream's Ray sizing gives no worker
(`SystemConfiguration._calculate_ray_worker`, lines 734-742: `int((cpu_count - 2) / 6)` is 0), and
`process_wsi` line 773 then divides by zero (`batch_num % ray_worker`). On 2 CPUs, `_setup_worker` line 442
also calls `ray.init(num_cpus=0)`.

So this driver makes four adaptations. Everything else is upstream's code, unchanged:
a. `get_gpu_resources` (used once by `SystemConfiguration.__init__`) reports one device with 0 GB of
   memory. The only other use of that figure is `_check_devices`, which then applies upstream's smallest-GPU
   batch cap (8 for CellViT256, 2 for CellViTSAM).
b. `CellViTInference.device = "cpu"`, set before `_load_model` runs.
c. Upstream's own overrides (its CLI flags `--cpu_count` / `--ray_worker`): `overwrite_available_cpus()`
   and `overwrite_ray_worker()`. The defaults 4 and 1 give Ray 2 CPUs and one actor with 2 CPUs.
d. `RAY_GPUS_DEACTIVATION=1` is upstream's own switch (`postprocessing_numpy.create_batch_pooling_actor`),
   so the actors ask Ray for no GPU share.
Not about upstream but about this shared machine: Ray's memory monitor kills a worker when the whole node
passes 95 % memory, counting other users' processes. That failed an upstream run here. The driver disables
the monitor (`RAY_memory_monitor_refresh_ms=0`, a Ray setting) unless the caller set it; this changes no
computation.
The checkpoint is placed in a private upstream cache folder (`CELLVIT_CACHE`) under the name upstream
downloads (`CellViT-256-x40-AMP.pth` / `CellViT-SAM-H-x40-AMP.pth`). `check_and_download` finds the file
there and downloads nothing. The model name (HIPT / SAM) comes from the checkpoint's `arch`.
A loader subclass counts the tiles upstream's own loader hands to the model (instrumentation only).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ADAPTATIONS = (
    "get_gpu_resources -> one 0 GB pseudo-device (ressource_manager.py:713-715 raise without CUDA)",
    "CellViTInference.device = 'cpu' (inference.py:188 hard-codes cuda)",
    "overwrite_available_cpus / overwrite_ray_worker (upstream's --cpu_count / --ray_worker; its default "
    "sizing gives 0 Ray workers below 8 CPUs)",
    "RAY_GPUS_DEACTIVATION=1 (upstream's switch: actors ask for no GPU share)",
)
ENVIRONMENT = "RAY_memory_monitor_refresh_ms=0 (shared machine: Ray's OOM monitor counts other users' memory)"
CACHE_NAMES = {
    "CellViT256": ("HIPT", "CellViT-256-x40-AMP.pth"),
    "CellViTSAM": ("SAM", "CellViT-SAM-H-x40-AMP.pth"),
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("slide", type=Path)
    ap.add_argument(
        "--checkpoint", type=Path, required=True, help="official-format CellViT256/CellViTSAM .pth"
    )
    ap.add_argument(
        "--outdir", type=Path, required=True, help="upstream's outdir (it writes <outdir>/<slide stem>/)"
    )
    ap.add_argument("--batch", type=int, default=8, help="upstream --batch_size (default 8, as upstream)")
    ap.add_argument("--cpu-count", dest="cpu_count", type=int, default=4, help="upstream --cpu_count")
    ap.add_argument("--ray-worker", dest="ray_worker", type=int, default=1, help="upstream --ray_worker")
    ap.add_argument(
        "--graph", action="store_true", help="upstream --graph: also write cells.pt (cell tokens)"
    )
    ap.add_argument(
        "--threads", type=int, default=0, help="torch intra-op threads in the main process (0: torch's)"
    )
    ap.add_argument("--result", type=Path, default=None, help="write timings and counts here as JSON")
    args = ap.parse_args(argv)
    if args.batch < 1 or args.ray_worker < 1 or args.cpu_count < args.ray_worker + 2:
        ap.error(
            "--batch and --ray-worker must be >= 1 and --cpu-count >= ray-worker + 2 (Ray gets cpu_count - 2)"
        )
    return args


def checkpoint_arch(path: Path) -> str:
    """The checkpoint's `arch` (tensors and plain containers only: weights_only)."""
    import torch

    return str(torch.load(path, map_location="cpu", weights_only=True)["arch"])


def prepare_cache(checkpoint: Path, cache: Path) -> str:
    """Put the checkpoint where upstream's cache_* functions look; returns upstream's model name."""
    arch = checkpoint_arch(checkpoint)
    if arch not in CACHE_NAMES:
        raise SystemExit(
            f"{checkpoint}: arch {arch!r}; upstream 1.0.9 loads only {sorted(CACHE_NAMES)} "
            "(cellvit/inference/inference.py, CellViTInference._get_model)"
        )
    name, filename = CACHE_NAMES[arch]
    cache.mkdir(parents=True, exist_ok=True)
    target = cache / filename
    if target.is_symlink() or target.exists():
        target.unlink()
    target.symlink_to(checkpoint.resolve())
    return name


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    t_start = time.perf_counter()
    os.environ["RAY_GPUS_DEACTIVATION"] = "1"  # (d)
    os.environ.setdefault("RAY_memory_monitor_refresh_ms", "0")
    cache = args.outdir / ".upstream-cache"
    os.environ["CELLVIT_CACHE"] = str(cache)  # read by cellvit.config.config at import
    model_name = prepare_cache(args.checkpoint, cache)

    import ray
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    import cellvit.utils.ressource_manager as rm
    from cellvit.inference.inference import CellViTInference

    real_gpu_resources = rm.get_gpu_resources

    def cpu_pseudo_device(logger=None):  # (a)
        res = real_gpu_resources(logger)
        if not res["has_gpu"]:
            res = {**res, "gpu_count": 1, "devices": {0: {"name": "cpu", "total_memory_gb": 0.0}}}
        return res

    rm.get_gpu_resources = cpu_pseudo_device
    system = rm.SystemConfiguration(gpu=0)
    rm.get_gpu_resources = real_gpu_resources
    system.overwrite_available_cpus(args.cpu_count)  # (c)
    system.overwrite_ray_worker(args.ray_worker)

    import cellvit.inference.inference as inference_module

    counts = {"tiles_processed": 0, "tiles_planned": None, "tiles_discarded": None}

    class CountingLoader(inference_module.LivePatchWSIDataloader):
        """Upstream's loader, unchanged; counts the tiles it hands to the model (instrumentation only)."""

        def __next__(self):
            try:
                batch = super().__next__()
            except StopIteration:
                counts.update(tiles_planned=len(self.dataset), tiles_discarded=self.discard_count)
                raise
            if not isinstance(batch[0], list):
                counts["tiles_processed"] += len(batch[1])
            return batch

    inference_module.LivePatchWSIDataloader = CountingLoader

    class CPUCellViTInference(CellViTInference):
        def _load_model(self) -> None:
            self.device = "cpu"  # (b)
            super()._load_model()

    t_setup = time.perf_counter()
    inference = CPUCellViTInference(
        model_name=model_name,
        outdir=args.outdir,
        system_configuration=system,
        batch_size=args.batch,
        graph=args.graph,
    )
    t_wsi = time.perf_counter()
    inference.process_wsi(wsi_path=args.slide)
    t_done = time.perf_counter()
    ray.shutdown()
    t_end = time.perf_counter()

    out = args.outdir / args.slide.stem
    det_path = out / "cell_detection.json"
    result = {
        "upstream": "cellvit==1.0.9 CellViTInference.process_wsi",
        "adaptations": list(ADAPTATIONS),
        "environment": ENVIRONMENT if os.environ["RAY_memory_monitor_refresh_ms"] == "0" else None,
        "model_name": model_name,
        "batch_size": inference.batch_size,
        "mixed_precision_requested": bool(inference.mixed_precision),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "ray": ray.__version__,
        "ray_worker": system.ray_worker,
        "ray_remote_cpus": system.ray_remote_cpus,
        "import_s": t_setup - t_start,
        "setup_s": t_wsi - t_setup,  # model load, Ray start
        "process_wsi_s": t_done - t_wsi,
        "shutdown_s": t_end - t_done,
        "cell_detection": str(det_path) if det_path.is_file() else None,
        **counts,
    }
    if det_path.is_file():
        with open(det_path) as f:
            meta = json.load(f)["wsi_metadata"]
        # the slide grid upstream processed, as PathoPatcher reports it
        result["wsi_metadata"] = {
            k: meta.get(k)
            for k in (
                "base_mpp",
                "target_patch_mpp",
                "orig_n_tiles_cols",
                "orig_n_tiles_rows",
                "n_patches",
                "downsampling",
            )
        }
    if args.result:
        args.result.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
