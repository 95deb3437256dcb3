"""End to end, side by side: this pipeline vs an upstream-style (CellViT-Inference 1.0.9) baseline.

Same model, same slide, same machine, one process, one run; prints both sides, the ratio, per-stage seconds
and how well the two cell sets agree.

    NUMBA_CACHE_DIR=.numba_cache .venv/bin/python benchmarks/bench_e2e_vs_upstream.py \
        [--model demo|tiny-random|cellvit256-random|CHECKPOINT] [--tiles 3] [--tile-size 1024] [--batch 8] \
        [--backends onnxruntime torch] [--embeddings] [--threads 0] [--json e2e.json]

Sides:
- **cellvit-trt** — `runtime.job.run_input` (reader thread, backend thread, post-processing threads with the
  Numba kernels, streaming merge, the table writer) with the ONNX Runtime backend (the deployment graph, FP32,
  exported once into the cache before timing) and, as a second row, the PyTorch backend (eager FP32, same
  deployment module). ORT vs torch isolates the model-runtime effect; torch vs the baseline isolates the
  pipeline effect (plus the shared-skip-decoder saving, which the torch backend has and upstream has not).
- **upstream-style baseline** — CellViT-Inference's structure, re-enacted in-process with the upstream oracle:
  serial tile reading in the main thread (OpenSlide `DeepZoomGenerator(tile_size=T-64, overlap=32,
  limit_bounds=True)`, white `pad_tile`, ToTensor+Normalize, batches of 8, as `LivePatchWSIDataloader`);
  PyTorch eager FP32 `forward(retrieve_tokens=True)` + `apply_softmax_reorder`; the upstream
  `BatchPoolingActor.convert_batch_to_graph_nodes` (= `DetectionCellPostProcessor.post_process_batch` +
  globalisation + cell-token pooling), run as a plain object (`ray.remote` stubbed to the identity, so it runs
  in this process right after each batch); the upstream `OverlapCellCleaner` merge at the end.
  Model: for CellViT256 / SAM checkpoints the *upstream class* (`cellvit.models.cell_segmentation`) with the
  checkpoint's weights (strict load). The tiny demo model has decoder widths upstream hard-codes (64/128/256,
  skips 256/128/312), so the upstream class cannot represent it; there the baseline runs this package's
  `CellViT` modules in eager FP32 but *called the upstream way* (`_forward_upsample`: the shared skip decoders
  re-run for each of the three branches), so the model cost structure is upstream's.

Not reproduced (stated in the output): upstream's Ray actors (on a many-core host they overlap post-processing
with the model loop; upstream gives Ray `cpu_count - 2` CPUs, i.e. none on a 2-core machine), its Otsu tissue
prefilter (both sides process every tile here) and its JSON/GeoJSON writing (the baseline writes nothing; this
pipeline writes `cells.csv` + summary inside the timing, so the ratio is conservative).
Timed: from the first tile read to the merged cell list; not timed: slide synthesis, ONNX export, session
creation, one warm-up batch per side (JIT / allocator warm-up), agreement scoring.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import platform
import sys
import tempfile
import time
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # upstream_oracle (test-only)

MARGIN = 64  # upstream: total tile overlap and cell_status margin (pixels at target mpp)
TOKEN_SIZE = 16  # ViT patch size: cell tokens are pooled over bbox / 16
MATCH_RADIUS = 12.0  # px at 40x (0.25 mpp): the detection-F1 radius used by CellViT / HoVer-Net


# ---- model
def make_checkpoint(spec: str, tile_size: int, folder: Path, seed: int) -> tuple[Path, str]:
    """(checkpoint path, description) for --model."""
    import torch

    from cellvit_trt.models import build_model, save_checkpoint

    if spec == "demo":
        try:
            from cellvit_trt.data import demo_checkpoint_path

            return Path(demo_checkpoint_path()), "shipped demo checkpoint (tiny, trained on synthetic tiles)"
        except Exception as exc:  # noqa: BLE001 - absent data file: fall back, and say so
            print(
                f"note: demo checkpoint unavailable ({exc}); using a random-weight tiny model",
                file=sys.stderr,
            )
            spec = "tiny-random"
    if spec == "tiny-random":
        path = folder / f"tiny-random-s{seed}.pth"
        if not path.is_file():  # reused from --workdir: the ONNX graph cached there is keyed by its hash
            torch.manual_seed(seed)
            save_checkpoint(path, build_model("tiny").eval())
        return path, f"tiny CellViT, random weights (PyTorch default init, seed {seed})"
    if spec == "cellvit256-random":
        from upstream_oracle import randomize_, upstream_model  # tests/upstream_oracle.py

        path = folder / f"cellvit256-random-s{seed}.pth"
        if not path.is_file():
            up = randomize_(upstream_model("CellViT256"), seed=seed)
            ours = build_model("CellViT256").eval()
            ours.load_state_dict(up.state_dict(), strict=True)
            save_checkpoint(path, ours)
        return path, f"CellViT-256, random weights (upstream class, oracle.randomize_ seed {seed})"
    path = Path(spec)
    if not path.is_file():
        raise SystemExit(
            f"--model {spec}: not 'demo', 'tiny-random', 'cellvit256-random' or a checkpoint file"
        )
    return path, f"checkpoint {path.name}"


def snapshot(checkpoint: Path, folder: Path) -> Path:
    """A private copy of the checkpoint, so every side loads the same bytes even if the file is replaced
    while the benchmark runs (e.g. a retrained demo model landing in the working tree)."""
    import shutil

    from cellvit_trt.io import sha256_file

    if checkpoint.parent == folder:
        return checkpoint
    digest = sha256_file(checkpoint)[:12]
    copy = folder / f"{checkpoint.stem}-{digest}{checkpoint.suffix}"
    if not copy.is_file():
        shutil.copyfile(checkpoint, copy)
    if sha256_file(copy)[:12] != digest:
        raise SystemExit(f"checkpoint {checkpoint} changed while it was being copied; run again")
    return copy


class UpstreamStyleForward:
    """Upstream's forward for a model the upstream classes cannot build: same modules, but the shared skip
    decoders run once per branch (upstream `CellViT._forward_upsample`)."""

    def __init__(self, model: Any) -> None:
        self.model = model

    def __call__(self, x: Any, retrieve_tokens: bool = False) -> dict[str, Any]:
        m = self.model
        tissue, (z1, z2, z3, z4) = m.encoder(x)
        out = {"tissue_types": m.classifier_head(tissue)}

        def branch(decoder: Any) -> Any:
            return decoder(z4, (m.decoder0(x), m.decoder1(z1), m.decoder2(z2), m.decoder3(z3)))

        out["nuclei_binary_map"] = branch(m.nuclei_binary_map_decoder)[:, :2]
        out["hv_map"] = branch(m.hv_map_decoder)
        out["nuclei_type_map"] = branch(m.nuclei_type_maps_decoder)
        if retrieve_tokens:
            out["tokens"] = z4
        return out


def baseline_model(checkpoint: Path) -> tuple[Any, Any, str]:
    """(callable forward(x, retrieve_tokens), ModelInfo, description of what runs)."""
    from cellvit_trt.models import load_checkpoint
    from upstream_oracle import upstream_model  # tests/upstream_oracle.py

    ours, info = load_checkpoint(checkpoint)
    variant = info.variant
    if variant in ("CellViT256", "SAM-B", "SAM-L", "SAM-H"):
        up = upstream_model(
            variant, info.num_nuclei_classes, info.num_tissue_classes, regression_loss=info.regression_loss
        )
        up.load_state_dict(ours.state_dict(), strict=True)
        del ours
        return up.eval(), info, f"upstream cellvit==1.0.9 class for {variant}, eager FP32"
    return (
        UpstreamStyleForward(ours.eval()),
        info,
        (
            f"cellvit_trt.models CellViT ({variant}; the upstream class cannot represent its decoder "
            "widths), eager FP32, skip decoders re-run per branch as upstream"
        ),
    )


# ---- slide
def write_slide(folder: Path, tiles: int, tile_size: int, seed: int) -> Path:
    """Synthetic 0.25-mpp pyramidal TIFF of exactly tiles x tiles upstream tiles (side = tiles * stride)."""
    from cellvit_trt.synthetic.slide import write_synthetic_slide

    side = tiles * (tile_size - MARGIN)
    path = folder / f"e2e-{tiles}x{tiles}-{tile_size}-s{seed}.svs"
    if path.is_file():
        return path
    # all tissue (no glass): every tile is one that a tissue detector would keep
    write_synthetic_slide(
        path, width=side, height=side, mpp=0.25, seed=seed, glass_fraction=0.0, write_labels=False
    )
    return path


# ---- upstream-style baseline
def import_upstream_postprocessing() -> tuple[Any, Any, Any]:
    """(DetectionCellPostProcessor, BatchPoolingActor class, OverlapCellCleaner) from cellvit==1.0.9.

    `ray` is stubbed: `ray.remote(...)` becomes the identity decorator, so the upstream actor class is a plain
    class whose methods run in this process (the computation is upstream's code unchanged)."""
    if "ray" not in sys.modules:
        ray = types.ModuleType("ray")
        ray.remote = lambda *a, **k: lambda cls: cls  # type: ignore[attr-defined]
        sys.modules["ray"] = ray
    elif not hasattr(sys.modules["ray"], "remote"):
        sys.modules["ray"].remote = lambda *a, **k: lambda cls: cls  # type: ignore[attr-defined]
    os.environ.setdefault("RAY_GPUS_DEACTIVATION", "1")
    from cellvit.inference.overlap_cell_cleaner import OverlapCellCleaner
    from cellvit.inference.postprocessing_numpy import DetectionCellPostProcessor, create_batch_pooling_actor

    return DetectionCellPostProcessor, create_batch_pooling_actor(1), OverlapCellCleaner


def pad_tile(patch: np.ndarray, size: int, col: int, row: int) -> np.ndarray:
    """PathoPatcher `pad_tile`: white padding to size x size, on the top/left for the first row/column."""
    h, w = patch.shape[:2]
    out = np.full((size, size, 3), 255, np.uint8)
    r0 = size - h if row == 0 else 0
    c0 = size - w if col == 0 else 0
    out[r0 : r0 + h, c0 : c0 + w] = patch[..., :3]
    return out


class UpstreamTileReader:
    """LivePatchWSIDataset-style tile access: OpenSlide DeepZoom at the level-0 (0.25 mpp) DeepZoom level."""

    def __init__(self, slide: Path, tile_size: int) -> None:
        import openslide
        from openslide.deepzoom import DeepZoomGenerator

        self.slide = openslide.OpenSlide(str(slide))
        self.tile_size = tile_size
        self.dz = DeepZoomGenerator(
            self.slide, tile_size=tile_size - MARGIN, overlap=MARGIN // 2, limit_bounds=True
        )
        self.level = self.dz.level_count - 1
        self.cols, self.rows = self.dz.level_tiles[self.level]

    def coords(self) -> list[tuple[int, int]]:
        return [(r, c) for r in range(self.rows) for c in range(self.cols)]

    def read(self, row: int, col: int) -> np.ndarray:
        # a copy, as torchvision's ToTensor makes (np.asarray of a PIL image is read-only)
        patch = np.array(self.dz.get_tile(self.level, (col, row)).convert("RGB"))
        if patch.shape[0] < self.tile_size or patch.shape[1] < self.tile_size:
            patch = pad_tile(patch, self.tile_size, col, row)
        return patch

    def close(self) -> None:
        self.slide.close()


@dataclass
class SideResult:
    name: str
    wall_s: float
    tiles: int
    stages: dict[str, float]
    cells: int
    cells_before_merge: int | None
    xy: np.ndarray = field(repr=False)
    types: np.ndarray = field(repr=False)
    notes: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def tiles_per_s(self) -> float:
        return self.tiles / self.wall_s if self.wall_s > 0 else float("nan")


def run_baseline(slide: Path, checkpoint: Path, tile_size: int, batch: int, threads: int) -> SideResult:
    import torch
    import torch.nn.functional as F

    if threads:
        torch.set_num_threads(threads)
    forward, info, what = baseline_model(checkpoint)
    DetectionCellPostProcessor, BatchPoolingActor, OverlapCellCleaner = import_upstream_postprocessing()
    wsi = types.SimpleNamespace(
        name=slide.name,
        slide_path=slide,
        metadata={"downsampling": 1, "patch_size": tile_size, "patch_overlap": MARGIN},
    )
    nuclei_types = {"Background": 0, **{n: i for i, n in enumerate(info.nuclei_names) if i > 0}}
    run_conf = {"dataset_config": {"nuclei_types": nuclei_types}, "model": {"token_patch_size": TOKEN_SIZE}}
    actor = BatchPoolingActor(DetectionCellPostProcessor(wsi=wsi, nr_types=info.num_nuclei_classes), run_conf)
    mean = torch.tensor(info.mean, dtype=torch.float32).view(3, 1, 1)
    std = torch.tensor(info.std, dtype=torch.float32).view(3, 1, 1)

    def to_tensor(img: np.ndarray) -> Any:  # torchvision ToTensor + Normalize
        return (torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1).float().div(255.0) - mean) / std

    def softmax_reorder(p: dict[str, Any]) -> dict[str, Any]:  # CellViTInference.apply_softmax_reorder
        p["nuclei_binary_map"] = F.softmax(p["nuclei_binary_map"], dim=1).permute(0, 2, 3, 1)
        p["nuclei_type_map"] = F.softmax(p["nuclei_type_map"], dim=1).permute(0, 2, 3, 1)
        p["hv_map"] = p["hv_map"].permute(0, 2, 3, 1)
        return p

    reader = UpstreamTileReader(slide, tile_size)
    coords = reader.coords()
    with torch.no_grad():  # warm-up (not timed): one tile through read + model
        forward(to_tensor(reader.read(*coords[0]))[None], retrieve_tokens=True)

    stages = dict.fromkeys(("read", "infer", "post", "merge"), 0.0)
    cells: list[dict] = []
    t0 = time.perf_counter()
    with torch.no_grad():
        for start in range(0, len(coords), batch):
            chunk = coords[start : start + batch]
            t = time.perf_counter()
            patches = torch.stack([to_tensor(reader.read(r, c)) for r, c in chunk])
            meta = [{"row": r, "col": c} for r, c in chunk]
            t1 = time.perf_counter()
            pred = softmax_reorder(forward(patches, retrieve_tokens=True))
            t2 = time.perf_counter()
            complete, _detection, _tokens, _positions = actor.convert_batch_to_graph_nodes(pred, meta)
            cells += complete
            t3 = time.perf_counter()
            stages["read"] += t1 - t
            stages["infer"] += t2 - t1
            stages["post"] += t3 - t2
        t = time.perf_counter()
        keep = (
            list(
                OverlapCellCleaner(cells, logging.getLogger("upstream-merge"))
                .clean_detected_cells()
                .index.values
            )
            if cells
            else []
        )
        stages["merge"] = time.perf_counter() - t
    wall = time.perf_counter() - t0
    reader.close()
    kept = [cells[i] for i in keep]
    xy = np.array([c["centroid"] for c in kept], np.float64).reshape(-1, 2)
    ty = np.array([c["type"] for c in kept], np.int64)
    return SideResult(
        "upstream-style baseline",
        wall,
        len(coords),
        stages,
        len(kept),
        len(cells),
        xy,
        ty,
        notes=[
            what,
            f"torch threads {torch.get_num_threads()}",
            "post = upstream post_process_batch + globalisation + cell-token pooling, in-process "
            "(upstream: Ray actors)",
        ],
    )


# ---- this pipeline
def warm_kernels(tile_size: int) -> None:
    """Load/compile the Numba kernels once before timing (cached with NUMBA_CACHE_DIR)."""
    from cellvit_trt.kernels import PostProcessor

    yy, xx = np.mgrid[:tile_size, :tile_size]
    fg = (((yy % 64) - 32) ** 2 + ((xx % 64) - 32) ** 2 < 200).astype(np.uint8)
    hv = np.zeros((2, tile_size, tile_size), np.float32)
    hv[0] = np.where(fg, ((xx % 64) - 32) / 16.0, 0)
    hv[1] = np.where(fg, ((yy % 64) - 32) / 16.0, 0)
    PostProcessor().process_tile(fg, hv, fg.copy())


def make_backend(
    checkpoint: Path,
    name: str,
    tile_size: int,
    batch: int,
    threads: int,
    tokens: bool,
    hv_dtype: str,
    gate: bool,
    folder: Path,
) -> Any:
    """A backend for the checkpoint; the ONNX graph (FP32) is exported here, before any timing."""
    from cellvit_trt.runtime.backends import open_backend

    if name == "onnxruntime":
        from cellvit_trt.errors import GateError
        from cellvit_trt.export import ExportSettings, export
        from cellvit_trt.io import sha256_file

        digest = sha256_file(checkpoint)[:12]
        graph = (
            folder
            / f"{checkpoint.stem}-{digest}-{tile_size}-fp32-hv{hv_dtype[5:]}{'-tok' if tokens else ''}.onnx"
        )
        settings = ExportSettings(
            checkpoint=checkpoint,
            output=graph,
            precision="fp32",
            tile_size=tile_size,
            hv_dtype=hv_dtype,
            tokens=tokens,
            gate=gate,
        )
        if not graph.is_file():
            try:
                export(settings)
            except GateError as exc:
                # a speed benchmark still runs; the agreement columns show what the gate objected to
                print(f"WARNING: {exc}\ncontinuing with the ungated graph", file=sys.stderr)
                export(dataclasses.replace(settings, gate=False))
        return open_backend(graph, "onnxruntime", batch=batch, threads=threads)
    if name == "torch":
        from cellvit_trt.runtime.backends.torch import TorchBackend

        return TorchBackend(
            checkpoint,
            precision="fp32",
            batch=batch,
            tile_size=tile_size,
            tokens=tokens,
            hv_dtype=hv_dtype,
            threads=threads,
        )
    return open_backend(checkpoint, name, batch=batch, tile_size=tile_size, threads=threads, tokens=tokens)


def run_ours(
    slide: Path,
    warmup_slide: Path,
    checkpoint: Path,
    backend_name: str,
    tile_size: int,
    batch: int,
    threads: int,
    out: Path,
    embeddings: bool,
    hv_dtype: str = "float16",
    gate: bool = True,
) -> SideResult:
    from cellvit_trt.runtime.job import run_input
    from cellvit_trt.runtime.settings import RunSettings

    outputs = ["table", "summary"] + (["embeddings"] if embeddings else [])
    backend = make_backend(
        checkpoint, backend_name, tile_size, batch, threads, embeddings, hv_dtype, gate, out.parent
    )
    settings = RunSettings(
        input=slide,
        model=str(checkpoint),
        output=out,
        backend=backend_name,
        batch=batch,
        threads=threads,
        tissue=False,
        outputs=outputs,
    )
    with backend:
        # warm-up, not timed: one whole run on a one-tile slide (lazy imports of the writers and merge,
        # allocator and JIT warm-up), then the kernels on a dense synthetic map
        import pandas  # noqa: F401 - pyarrow imports it lazily on the first cell batch (~1 s, once a process)

        warm_out = out.with_name(out.name + "-warmup")
        run_input(warmup_slide, settings, backend, out_dir=warm_out, progress=False, replace_other=True)
        warm_kernels(backend.tile_size)
        res = run_input(slide, settings, backend, out_dir=out, progress=False, replace_other=True)
        described = backend.describe()
    table = np.genfromtxt(
        out / "cells.csv", delimiter=",", names=True, dtype=None, encoding="utf-8", usecols=("x", "y", "type")
    )
    table = np.atleast_1d(table)
    xy = np.stack([table["x"], table["y"]], axis=1).astype(np.float64) if table.size else np.zeros((0, 2))
    st = res.stats
    stages = {
        "read": st.stage_s.get("read", 0.0),
        "infer": st.stage_s.get("infer", 0.0),
        "post": st.stage_s.get("post", 0.0),
        "merge": st.stage_s.get("sink", 0.0),
    }
    dropped = res.summary.get("cells_dropped_in_merge")
    return SideResult(
        f"cellvit-trt {backend_name}",
        st.wall_s,
        st.tiles,
        stages,
        res.cells,
        res.cells + dropped if dropped is not None else None,
        xy,
        table["type"].astype(np.int64) if table.size else np.zeros(0, np.int64),
        notes=[
            f"backend {described}",
            f"post workers {settings.post_workers}",
            "stage seconds are busy time summed over threads (stages overlap)",
            "merge = sink: journal + streaming merge + table writer",
            f"hv {hv_dtype}",
        ],
        extra={"backend_wait_fraction": round(st.backend_wait_fraction, 4)},
    )


# ---- agreement
def agreement(
    ref_xy: np.ndarray, ref_type: np.ndarray, xy: np.ndarray, ty: np.ndarray, radius: float = MATCH_RADIUS
) -> dict[str, float]:
    """Detection F1 of two cell sets: one-to-one pairs within `radius`, closest first (greedy on sorted
    distances; exact for near-identical sets, and it scales to whole slides unlike a dense Hungarian)."""
    from scipy.spatial import cKDTree

    n_ref, n = len(ref_xy), len(xy)
    if n_ref == 0 or n == 0:
        return {
            "f1": float("nan") if n_ref == n else 0.0,
            "matched": 0,
            "type_agreement": float("nan"),
            "median_dist_px": float("nan"),
            "exact_fraction": float("nan"),
        }
    pairs = cKDTree(ref_xy).sparse_distance_matrix(cKDTree(xy), radius, output_type="ndarray")
    order = np.argsort(pairs["v"], kind="stable")
    used_a, used_b = np.zeros(n_ref, bool), np.zeros(n, bool)
    ia, ib, dist = [], [], []
    for k in order:
        a, b = int(pairs["i"][k]), int(pairs["j"][k])
        if not used_a[a] and not used_b[b]:
            used_a[a] = used_b[b] = True
            ia.append(a)
            ib.append(b)
            dist.append(float(pairs["v"][k]))
    m = len(ia)
    d = np.asarray(dist)
    # upstream reports rint(centroid), ours sub-pixel centroids: "exact" = same pixel once ours is rounded
    exact = float(np.mean(np.all(np.rint(xy[ib]) == np.rint(ref_xy[ia]), axis=1))) if m else float("nan")
    return {
        "f1": 2 * m / (n_ref + n),
        "matched": m,
        "type_agreement": float(np.mean(ref_type[ia] == ty[ib])) if m else float("nan"),
        "median_dist_px": float(np.median(d)) if m else float("nan"),
        "exact_fraction": exact,
    }


# ---- report
def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def print_report(rows: list[SideResult], base: SideResult, agree: dict[str, dict], header: list[str]) -> None:
    for line in header:
        print(line)
    print()
    print(
        f"{'side':<28} {'wall s':>8} {'tiles/s':>8} {'read':>7} {'infer':>7} {'post':>7} {'merge':>7} "
        f"{'cells':>7} {'F1 vs base':>10} {'type agr':>8} {'same px':>7} {'speed-up':>8}"
    )
    for r in rows:
        a = agree.get(r.name)
        f1 = f"{a['f1']:.4f}" if a else "-"
        tagr = f"{a['type_agreement']:.4f}" if a else "-"
        same = f"{a['exact_fraction']:.3f}" if a else "-"
        ratio = base.wall_s / r.wall_s if r is not base else 1.0
        s = r.stages
        print(
            f"{r.name:<28} {r.wall_s:>8.2f} {r.tiles_per_s:>8.3f} {s['read']:>7.2f} {s['infer']:>7.2f} "
            f"{s['post']:>7.2f} {s['merge']:>7.2f} {r.cells:>7d} {f1:>10} {tagr:>8} {same:>7} {ratio:>7.2f}x"
        )
    print()
    for r in rows:
        if r is base:
            continue
        print(
            f"ratio {r.name} / baseline: {r.tiles_per_s / base.tiles_per_s:.2f}x tiles/s "
            f"({base.wall_s:.2f} s -> {r.wall_s:.2f} s)"
        )
    for r in rows:
        print(
            f"- {r.name}: "
            + "; ".join(
                r.notes
                + [f"{k} {v}" for k, v in r.extra.items()]
                + ([f"cells before merge {r.cells_before_merge}"] if r.cells_before_merge is not None else [])
            )
        )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--model",
        default="demo",
        help="'demo' (shipped tiny checkpoint; random-weight tiny if absent), 'tiny-random', "
        "'cellvit256-random' (slow on CPU: use --tile-size 256) or a checkpoint path",
    )
    ap.add_argument("--tiles", type=int, default=3, help="synthetic slide of TILES x TILES tiles (>= 2)")
    ap.add_argument("--tile-size", dest="tile_size", type=int, default=1024, help="1024 (upstream) or 256")
    ap.add_argument("--batch", type=int, default=8, help="tiles per batch, both sides (upstream default 8)")
    ap.add_argument(
        "--backends",
        nargs="+",
        default=["onnxruntime", "torch"],
        choices=["onnxruntime", "torch", "tensorrt", "torch-cuda"],
        help="this pipeline's rows",
    )
    ap.add_argument("--threads", type=int, default=0, help="intra-op threads for ORT/PyTorch (0 = default)")
    ap.add_argument(
        "--embeddings",
        action="store_true",
        help="this pipeline also pools cell embeddings (upstream always pools cell tokens)",
    )
    ap.add_argument(
        "--hv-fp32",
        dest="hv_fp32",
        action="store_true",
        help="HV map as float32 in this pipeline's outputs (default float16, the deployment default)",
    )
    ap.add_argument(
        "--no-gate",
        dest="gate",
        action="store_false",
        help="export the ONNX graph without the parity gate (e.g. barely trained checkpoints)",
    )
    ap.add_argument("--slide", type=Path, default=None, help="an existing slide instead of a synthetic one")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workdir", type=Path, default=None, help="keep slide/checkpoint/outputs here")
    ap.add_argument("--json", type=Path, default=None, help="write the report as JSON")
    args = ap.parse_args(argv)
    if args.tiles < 2:
        ap.error("--tiles must be >= 2 (upstream removes padding specially for one-tile-wide slides)")
    if args.tile_size % 16 or args.tile_size <= MARGIN:
        ap.error("--tile-size must be a multiple of 16 and > 64")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    with tempfile.TemporaryDirectory(prefix="cellvit-e2e-") as tmp:
        work = args.workdir or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        checkpoint, model_desc = make_checkpoint(args.model, args.tile_size, work, args.seed)
        checkpoint = snapshot(checkpoint, work)
        model_desc += f" [{checkpoint.name}]"
        t = time.perf_counter()
        slide = args.slide or write_slide(work, args.tiles, args.tile_size, args.seed)
        synth_s = time.perf_counter() - t
        rows: list[SideResult] = []
        warmup_slide = write_slide(work, 1, args.tile_size, args.seed)
        for name in args.backends:
            rows.append(
                run_ours(
                    slide,
                    warmup_slide,
                    checkpoint,
                    name,
                    args.tile_size,
                    args.batch,
                    args.threads,
                    work / f"out-{name}",
                    args.embeddings,
                    "float32" if args.hv_fp32 else "float16",
                    args.gate,
                )
            )
        base = run_baseline(slide, checkpoint, args.tile_size, args.batch, args.threads)
        rows.insert(0, base)
        agree = {r.name: agreement(base.xy, base.types, r.xy, r.types) for r in rows if r is not base}
        load = os.getloadavg()
        synth_note = "" if args.slide else f", synthetic, written in {synth_s:.1f} s"
        header = [
            "End to end, same model / slide / machine, one run: cellvit-trt vs upstream-style baseline",
            f"model: {model_desc}; tile {args.tile_size}, batch {args.batch}",
            f"slide: {slide.name} ({base.tiles} tiles{synth_note})",
            f"machine: {cpu_model()}, {os.cpu_count()} CPUs, {platform.platform()}; "
            f"load average at end {load[0]:.1f}/{load[1]:.1f}/{load[2]:.1f}",
            f"agreement: one-to-one centroid pairs within {MATCH_RADIUS:g} px; F1, type agreement of pairs, "
            "pairs on the same pixel (ours rounded as upstream rounds)",
        ]
        print_report(rows, base, agree, header)
        if args.json:
            from cellvit_trt.bench.environment import environment
            from cellvit_trt.io import write_json

            report = {
                "command": " ".join([Path(sys.argv[0]).name] + (argv if argv is not None else sys.argv[1:])),
                "model": model_desc,
                "tile_size": args.tile_size,
                "batch": args.batch,
                "tiles": base.tiles,
                "slide": str(slide) if args.slide else f"synthetic {args.tiles}x{args.tiles}",
                "cpu_model": cpu_model(),
                "load_average": load,
                "environment": environment(),
                "sides": [
                    {
                        "name": r.name,
                        "wall_s": r.wall_s,
                        "tiles_per_s": r.tiles_per_s,
                        "stages_s": r.stages,
                        "cells": r.cells,
                        "cells_before_merge": r.cells_before_merge,
                        "notes": r.notes,
                        **r.extra,
                        "agreement_vs_baseline": agree.get(r.name),
                        "speedup_vs_baseline": base.wall_s / r.wall_s,
                    }
                    for r in rows
                ],
            }
            write_json(args.json, report)
            print(f"JSON: {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
