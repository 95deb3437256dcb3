"""End to end, side by side: `cellvit-trt run` vs upstream's own WSI pipeline (`cellvit==1.0.9`), same model,
same slides, same machine, one script, alternating runs.

    bash benchmarks/upstream_env.sh                     # once: .venv-upstream with cellvit==1.0.9 + its deps
    NUMBA_CACHE_DIR=.numba_cache .venv/bin/python benchmarks/bench_e2e_vs_upstream.py \
        --checkpoint CK.pth [--slides synthetic:2x2 /work/shared/data/real/CMU-1-Small-Region.svs] \
        [--runs 3] [--batch 2] [--backends onnxruntime] [--workdir DIR] [--json e2e.json]

Sides. Each runs as its own command in its own process tree, measured from outside (upstream_measure.py):
- **upstream**: `.venv-upstream/bin/python benchmarks/upstream_driver.py`, i.e. upstream's
  `CellViTInference.process_wsi`. That is PathoPatcher tiling (OpenSlide DeepZoom, Otsu prefilter, LANCZOS
  rescaling), the upstream model class in eager FP32 with `retrieve_tokens=True`, Ray `BatchPoolingActor`s
  (post-processing, globalisation, cell-token pooling), `OverlapCellCleaner`, and its writers (`cells.json`,
  `cell_detection.json`, `cells.pt`). Upstream cannot start without a CUDA GPU; the driver makes four CPU
  adaptations and names them (file and line in its docstring). Every upstream figure is therefore **partial**:
  upstream's pipeline on a CPU, not upstream as shipped on the GPU it requires.
- **cellvit-trt**: `cellvit-trt run SLIDE -m GRAPH --backend onnxruntime`, with outputs `cells embeddings
  summary`: upstream-layout `cells.json` / `cell_detection.json` plus pooled cell embeddings, the same work as
  upstream's `--graph`. GRAPH is the checkpoint exported once before any timing with `--precision fp32
  --hv-dtype float32 --tokens`. So both sides run the model in FP32, keep FP32 HV maps and pool encoder tokens
  per cell. Optional extra row: `--backends onnxruntime torch` (PyTorch eager FP32 on the checkpoint).
Equal settings: the same checkpoint file and batch size. Each side uses its own tissue detection, as a user
would run it (upstream's Otsu prefilter, ours `--tissue` default); the tile counts are printed. Order: run i
starts with upstream when i is even and with cellvit-trt when i is odd. One untimed warm-up run per side on a
one-tile slide comes first (page cache, Numba cache, .pyc files).
Per run: wall time of the command, CPU time of its whole process tree (Ray's processes included), the
largest peak RSS of one process, the load average before and after, and the machine's busy CPU seconds
taken by other processes meanwhile. Cells: counts per class, detection F1 between the two sides (one-to-one
centroid pairs within 3 um), type agreement of the pairs.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from upstream_measure import Measured, agreement, class_counts, loadavg, measure, read_cells  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
UPSTREAM_ARCHS = ("CellViT256", "CellViTSAM")
MATCH_UM = 3.0  # detection-F1 radius: 12 px at 0.25 mpp (CellViT / HoVer-Net), in microns
STRIDE = 960  # upstream's tile stride at the target mpp (1024 tile, 64 overlap)
PARTIAL = (
    "PARTIAL: upstream's process_wsi on a CPU with four adaptations (no CUDA here; see upstream_driver.py), "
    "not upstream as shipped on the GPU it requires"
)


def parse_slide_spec(spec: str) -> tuple[str, int, int] | Path:
    """'synthetic:CxR' -> ('synthetic', cols, rows); anything else is a slide path."""
    if spec.startswith("synthetic:"):
        try:
            cols, rows = (int(v) for v in spec.split(":", 1)[1].lower().split("x"))
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{spec!r}: expected synthetic:COLSxROWS, e.g. synthetic:2x2"
            ) from None
        if cols < 2 or rows < 2:
            # one tile wide or high takes upstream's _remove_padding branch, a different code path
            raise argparse.ArgumentTypeError(f"{spec!r}: need at least 2x2 tiles")
        return ("synthetic", cols, rows)
    path = Path(spec)
    if not path.is_file():
        raise argparse.ArgumentTypeError(f"{spec!r}: no such slide (or use synthetic:COLSxROWS)")
    return path


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--checkpoint", type=Path, required=True, help="official-format CellViT256 or CellViTSAM .pth"
    )
    ap.add_argument(
        "--slides",
        nargs="+",
        type=parse_slide_spec,
        default=[parse_slide_spec("synthetic:2x2")],
        help="synthetic:COLSxROWS (x40 pyramidal, all tissue) and/or slide paths",
    )
    ap.add_argument("--runs", type=int, default=3, help="timed runs per side and slide (>= 1; 3 to quote)")
    ap.add_argument(
        "--batch",
        type=int,
        default=1,
        help="tiles per batch, both sides (default 1: at 2, CellViT-256 took 17 GB in ONNX Runtime on a CPU)",
    )
    ap.add_argument("--backends", nargs="+", default=["onnxruntime"], choices=["onnxruntime", "torch"])
    ap.add_argument(
        "--upstream-python",
        dest="upstream_python",
        type=Path,
        default=ROOT / ".venv-upstream" / "bin" / "python",
    )
    ap.add_argument("--ray-worker", dest="ray_worker", type=int, default=1, help="upstream Ray actors")
    ap.add_argument(
        "--gate",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="run the export parity gate (costs several model passes on a CPU)",
    )
    ap.add_argument("--no-warmup", dest="warmup", action="store_false")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workdir", type=Path, default=None, help="keep slides, graph and outputs here")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    if args.runs < 1 or args.batch < 1 or args.ray_worker < 1:
        ap.error("--runs, --batch and --ray-worker must be >= 1")
    return args


# ---- preparation (not timed)
def checkpoint_info(path: Path) -> tuple[str, str, dict[int, str]]:
    """(arch, sha256, nuclei names by id) of the checkpoint; refuses archs upstream cannot load."""
    from cellvit_trt.models import load_checkpoint

    _, info = load_checkpoint(path)
    if info.arch not in UPSTREAM_ARCHS:
        raise SystemExit(
            f"{path}: arch {info.arch!r}; upstream 1.0.9 builds only {list(UPSTREAM_ARCHS)} "
            "(cellvit/inference/inference.py, CellViTInference._get_model raises NotImplementedError)"
        )
    return info.arch, str(info.sha256), dict(enumerate(info.nuclei_names))


def synthetic_slide(folder: Path, cols: int, rows: int, seed: int) -> Path:
    """x40 (0.25 mpp) pyramidal slide of exactly cols x rows upstream tiles, all tissue."""
    from cellvit_trt.synthetic.slide import write_synthetic_slide

    path = folder / f"synthetic-{cols}x{rows}-s{seed}.svs"
    if not path.is_file():
        write_synthetic_slide(
            path,
            width=cols * STRIDE,
            height=rows * STRIDE,
            mpp=0.25,
            seed=seed,
            glass_fraction=0.0,
            write_labels=False,
        )
    return path


def slide_mpp(path: Path) -> float:
    import openslide

    with openslide.OpenSlide(str(path)) as s:
        return float(s.properties["openslide.mpp-x"])


def export_graph(checkpoint: Path, sha: str, folder: Path, gate: bool) -> Path:
    graph = folder / f"{checkpoint.stem}-{sha[:12]}.fp32.hv32.tokens.onnx"
    if not graph.is_file():
        cmd = [
            str(ROOT / ".venv/bin/cellvit-trt"),
            "export",
            str(checkpoint),
            "-o",
            str(graph),
            "--precision",
            "fp32",
            "--hv-dtype",
            "float32",
            "--tokens",
            "--gate" if gate else "--no-gate",
        ]
        print("export (not timed):", " ".join(cmd), flush=True)
        subprocess.run(cmd, check=True)
    return graph


# ---- the two sides
def upstream_cmd(args: argparse.Namespace, slide: Path, checkpoint: Path, out: Path) -> list[str]:
    return [
        str(args.upstream_python),
        str(ROOT / "benchmarks" / "upstream_driver.py"),
        str(slide),
        "--checkpoint",
        str(checkpoint),
        "--outdir",
        str(out),
        "--batch",
        str(args.batch),
        "--ray-worker",
        str(args.ray_worker),
        "--cpu-count",  # upstream gives Ray cpu_count - 2: claim 2 more so Ray gets this machine's CPUs
        str((os.cpu_count() or 2) + 2),
        "--graph",
        "--result",
        str(out / "driver.json"),
    ]


def ours_cmd(args: argparse.Namespace, backend: str, slide: Path, model: Path, out: Path) -> list[str]:
    return [
        str(ROOT / ".venv/bin/cellvit-trt"),
        "run",
        str(slide),
        "-m",
        str(model),
        "--backend",
        backend,
        "-b",
        str(args.batch),
        "-o",
        str(out),
        "--outputs",
        "cells",
        "embeddings",
        "summary",
        "-q",
    ]


def side_outputs(side: str, out: Path, slide: Path) -> dict[str, Any]:
    """What a finished run left: cell_detection.json path, tiles processed, in-process seconds."""
    folder = out / slide.stem
    res: dict[str, Any] = {"cell_detection": folder / "cell_detection.json"}
    if side == "upstream":
        drv = json.loads((out / "driver.json").read_text())
        res.update(tiles=drv.get("tiles_processed"), inner_s=drv["process_wsi_s"], driver=drv)
    else:
        summ = json.loads((folder / "summary.json").read_text())
        res.update(tiles=summ.get("tiles_processed"), inner_s=summ.get("elapsed_s"))
    return res


def run_side(side: str, cmd: list[str], out: Path, slide: Path, log: Path) -> dict[str, Any]:
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    print(f"  {time.strftime('%H:%M:%S')} {side}: load {loadavg()}", flush=True)
    m = measure(cmd, log=log, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    if m.rc != 0:
        raise SystemExit(f"{side} failed (exit {m.rc}) on {slide.name}; log: {log}")
    res = {"measured": m, **side_outputs(side, out, slide)}
    xy, ty = read_cells(res["cell_detection"])
    res.update(xy=xy, types=ty)
    print(
        f"    wall {m.wall_s:.1f} s, cpu {m.cpu_s:.1f} s, others {m.others_cpu_s:.1f} s, "
        f"tiles {res['tiles']}, cells {len(xy)}, load after {m.loadavg_after}",
        flush=True,
    )
    return res


# ---- report
def median(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def summarise(runs: dict[str, list[dict[str, Any]]], base: str = "upstream") -> dict[str, dict[str, Any]]:
    """Per side: medians of wall / CPU; against `base`: the ratio of medians and the range of per-run ratios
    (run i of a side against run i of the base, taken back to back)."""
    out: dict[str, dict[str, Any]] = {}
    for side, rs in runs.items():
        wall = [r["measured"].wall_s for r in rs]
        cpu = [r["measured"].cpu_s for r in rs]
        row: dict[str, Any] = {
            "runs": len(rs),
            "wall_median_s": median(wall),
            "cpu_median_s": median(cpu),
            "wall_s": wall,
            "cpu_s": cpu,
        }
        if side != base and base in runs:
            bw = [r["measured"].wall_s for r in runs[base]]
            bc = [r["measured"].cpu_s for r in runs[base]]
            pairs_w = [b / w for b, w in zip(bw, wall, strict=False) if w > 0]
            pairs_c = [b / c for b, c in zip(bc, cpu, strict=False) if c > 0]
            row.update(
                wall_ratio=median(bw) / row["wall_median_s"],
                cpu_ratio=median(bc) / row["cpu_median_s"],
                wall_ratio_range=[min(pairs_w), max(pairs_w)] if pairs_w else None,
                cpu_ratio_range=[min(pairs_c), max(pairs_c)] if pairs_c else None,
            )
        out[side] = row
    return out


def compare_cells(
    runs: dict[str, list[dict[str, Any]]], names: dict[int, str], mpp: float, base: str = "upstream"
) -> dict[str, Any]:
    """Cells of the last run per side: counts per class, whether every run of a side found the same number,
    and F1 / type agreement of each side against the base."""
    radius = MATCH_UM / mpp
    res: dict[str, Any] = {"match_radius_px": radius}
    ref = runs[base][-1]
    for side, rs in runs.items():
        last = rs[-1]
        entry = {
            "cells": len(last["xy"]),
            "per_class": class_counts(last["types"], names),
            "same_count_every_run": len({len(r["xy"]) for r in rs}) == 1,
        }
        if side != base:
            entry["vs_" + base] = agreement(ref["xy"], ref["types"], last["xy"], last["types"], radius)
        res[side] = entry
    return res


def print_slide(name: str, runs: dict[str, list[dict[str, Any]]], summ: dict, cells: dict) -> None:
    print(f"\n== {name}")
    print(
        f"{'side':<24} {'run':>3} {'wall s':>8} {'cpu s':>8} {'others s':>8} {'maxRSS MB':>9} {'tiles':>5} "
        f"{'cells':>6} {'inner s':>8}  load before -> after"
    )
    for side, rs in runs.items():
        for i, r in enumerate(rs):
            m: Measured = r["measured"]
            inner = r.get("inner_s")
            print(
                f"{side:<24} {i:>3} {m.wall_s:>8.1f} {m.cpu_s:>8.1f} {m.others_cpu_s:>8.1f} "
                f"{m.max_rss_mb:>9.0f} "
                f"{r['tiles']!s:>5} {len(r['xy']):>6} {inner if inner is None else round(inner, 1)!s:>8}  "
                f"{m.loadavg_before} -> {m.loadavg_after}"
            )
    for side, s in summ.items():
        line = f"{side}: median wall {s['wall_median_s']:.1f} s, median CPU {s['cpu_median_s']:.1f} s"
        if "wall_ratio" in s:
            wr, cr = s["wall_ratio_range"], s["cpu_ratio_range"]
            line += (
                f"; upstream/this: wall {s['wall_ratio']:.2f}x (runs {wr[0]:.2f}-{wr[1]:.2f}), "
                f"CPU {s['cpu_ratio']:.2f}x (runs {cr[0]:.2f}-{cr[1]:.2f})"
            )
        print(line)
    print(f"cells (last run; pairs within {cells['match_radius_px']:.1f} px = {MATCH_UM:g} um):")
    for side, c in cells.items():
        if side == "match_radius_px":
            continue
        extra = ""
        if "vs_upstream" in c:
            a = c["vs_upstream"]
            extra = (
                f"; vs upstream: F1 {a['f1']:.4f}, matched {a['matched']}, type agreement "
                f"{a['type_agreement']:.4f}, median distance {a['median_dist_px']:.2f} px, "
                f"same pixel {a['same_pixel_fraction']:.3f}"
            )
        print(
            f"  {side}: {c['cells']} {c['per_class']}; "
            f"same count every run: {c['same_count_every_run']}{extra}"
        )


def jsonable(obj: Any) -> Any:
    if isinstance(obj, Measured):
        return asdict(obj)
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, dict):
        return {k: jsonable(v) for k, v in obj.items() if k not in ("xy", "types")}
    if isinstance(obj, list | tuple):
        return [jsonable(v) for v in obj]
    return obj


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not args.upstream_python.is_file():
        print(
            f"{args.upstream_python} not found: run `bash benchmarks/upstream_env.sh` first", file=sys.stderr
        )
        return 2
    work = (args.workdir or Path(os.environ.get("TMPDIR", "/tmp")) / "cellvit-e2e-upstream").resolve()
    work.mkdir(parents=True, exist_ok=True)
    checkpoint = args.checkpoint.resolve()
    arch, sha, names = checkpoint_info(checkpoint)
    names = {i: n for i, n in names.items() if i > 0}
    graph = export_graph(checkpoint, sha, work, args.gate) if "onnxruntime" in args.backends else None
    models = {"onnxruntime": graph, "torch": checkpoint}
    sides = ["upstream"] + [f"cellvit-trt {b}" for b in args.backends]

    def cmd_for(side: str, slide: Path, out: Path) -> list[str]:
        if side == "upstream":
            return upstream_cmd(args, slide, checkpoint, out)
        backend = side.split()[1]
        return ours_cmd(args, backend, slide, models[backend], out)

    slides = [
        synthetic_slide(work, s[1], s[2], args.seed) if isinstance(s, tuple) else s.resolve()
        for s in args.slides
    ]
    header = {
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "command": " ".join([Path(sys.argv[0]).name] + (argv if argv is not None else sys.argv[1:])),
        "checkpoint": f"{checkpoint.name} ({arch}, sha256 {sha[:12]})",
        "batch": args.batch,
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.platform()}",
        "load_at_start": loadavg(),
        "label": PARTIAL,
    }
    print("\n".join(f"{k}: {v}" for k, v in header.items()), flush=True)
    if args.warmup:
        warm = synthetic_slide(work, 1, 1, args.seed)
        print("warm-up (not timed), one tile per side", flush=True)
        for side in sides:
            out = work / "warmup" / side.replace(" ", "-")
            shutil.rmtree(out, ignore_errors=True)
            out.mkdir(parents=True)
            m = measure(cmd_for(side, warm, out), log=work / "warmup.log")
            if m.rc != 0:
                raise SystemExit(f"warm-up of {side} failed (exit {m.rc}); log: {work / 'warmup.log'}")

    report: dict[str, Any] = {**header, "slides": {}}

    def save(partial: dict[str, Any] | None = None) -> None:
        # after every run, so that a failure late in a long benchmark loses nothing measured
        if args.json:
            args.json.write_text(json.dumps(jsonable({**report, **(partial or {})}), indent=1, default=float))

    for slide in slides:
        mpp = slide_mpp(slide)
        print(f"\nslide {slide.name} ({mpp} mpp)", flush=True)
        runs: dict[str, list[dict[str, Any]]] = {s: [] for s in sides}
        for i in range(args.runs):
            order = sides if i % 2 == 0 else sides[1:] + sides[:1]
            for side in order:
                out = work / "out" / slide.stem / f"{side.replace(' ', '-')}-run{i}"
                runs[side].append(run_side(side, cmd_for(side, slide, out), out, slide, work / "runs.log"))
                save({"in_progress": {"slide": slide.name, "runs": runs}})
        summ = summarise(runs)
        cells = compare_cells(runs, names, mpp)
        print_slide(f"{slide.name}: {PARTIAL}", runs, summ, cells)
        report["slides"][slide.name] = {"mpp": mpp, "runs": jsonable(runs), "summary": summ, "cells": cells}
    report["load_at_end"] = loadavg()
    report["finished"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    print(f"\nload at end {report['load_at_end']}; finished {report['finished']}")
    if args.json:
        save()
        print(f"JSON: {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
