"""FP32 vs FP16 vs INT8 deployment graphs of one model on ONNX Runtime: speed, gate accuracy beside it.

    .venv/bin/python benchmarks/bench_export_variants.py                  # demo tiny checkpoint, 256 px
    .venv/bin/python benchmarks/bench_export_variants.py --checkpoint ck.pth --tile 1024 --calibration tiles/
    .venv/bin/python benchmarks/bench_export_variants.py --variant CellViT256 --tile 1024 --iters 3 --batch 1

Each variant is exported by `cellvit_trt.export` (gate on, synthetic H&E tiles), then timed on the same tiles
with ONNX Runtime (CPU unless --provider): warm-up, then --iters timed batches; latency stats in trtexec's
conventions and throughput in tiles/s, with the ratio to FP32 from the same run.

Caveat printed with the table: on a CPU, ONNX Runtime runs FP16 nodes through inserted casts (no FP16 kernels
on x86), so FP16 is *slower* there; the FP16/INT8 graphs exist for TensorRT. The CPU numbers show the cost of
each graph on the reference runtime and the accuracy each recipe keeps; GPU speed is for `cellvit-trt bench`.
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
import time
from pathlib import Path

import numpy as np


def _model(args):
    import torch

    from cellvit_trt.models import build_model, load_checkpoint, make_info

    if args.checkpoint is None and args.variant == "tiny" and not args.random:
        from cellvit_trt.data import demo_checkpoint_path

        args.checkpoint = demo_checkpoint_path()  # the shipped tiny model, trained on synthetic H&E
    if args.checkpoint:
        return load_checkpoint(args.checkpoint)
    torch.manual_seed(args.seed)
    model = build_model(args.variant).eval()
    return model, make_info(model.spec)


def _calibration_folder(args, root: Path) -> Path:
    if args.calibration:
        return Path(args.calibration)
    import cv2

    from cellvit_trt.export.samples import gate_tiles

    folder = root / "calib"
    folder.mkdir()
    for i, tile in enumerate(gate_tiles(args.calibration_tiles, args.tile, seed=args.seed + 100)):
        cv2.imwrite(str(folder / f"t{i:03d}.png"), cv2.cvtColor(tile, cv2.COLOR_RGB2BGR))
    return folder


def _time(path: Path, tiles: np.ndarray, batch: int, iters: int, provider: str, threads: int) -> dict:
    import onnxruntime as ort

    from cellvit_trt.bench.stats import summarize_ms

    opts = ort.SessionOptions()
    if threads:
        opts.intra_op_num_threads = threads
    sess = ort.InferenceSession(str(path), opts, providers=[provider])
    x = np.ascontiguousarray(tiles[:batch])
    for _ in range(2):  # warm-up
        sess.run(None, {"image": x})
    samples = []
    for _ in range(iters):
        t = time.perf_counter()
        sess.run(None, {"image": x})
        samples.append(time.perf_counter() - t)
    stats = summarize_ms(samples)
    stats["tiles_per_s"] = batch / (stats["median"] / 1e3)
    return stats


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", type=Path, default=None)
    p.add_argument("--variant", default="tiny",
                   help="variant when no --checkpoint (default tiny = the shipped demo checkpoint)")
    p.add_argument("--random", action="store_true", help="random weights instead of the demo checkpoint")
    p.add_argument("--tile", type=int, default=256)
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--iters", type=int, default=5)
    p.add_argument("--gate-tiles", type=int, default=2)
    p.add_argument("--calibration", type=Path, default=None, help="folder of H&E tiles (default: synthetic)")
    p.add_argument("--calibration-tiles", type=int, default=16)
    p.add_argument("--precisions", default="fp32,fp16,int8")
    p.add_argument("--provider", default="CPUExecutionProvider")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=None, help="also write the results as JSON here")
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)

    from cellvit_trt.export import ExportSettings, export
    from cellvit_trt.export.samples import gate_tiles

    model, info = _model(args)
    tiles = gate_tiles(max(args.batch, 1), args.tile, seed=args.seed + 7)
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-export-") as tmp:
        root = Path(tmp)
        precisions = args.precisions.split(",")
        calib_folder = _calibration_folder(args, root) if "int8" in precisions else None
        for precision in precisions:
            calib = calib_folder if precision == "int8" else None
            s = ExportSettings(
                output=root / f"{precision}.onnx",
                precision=precision,
                tile_size=args.tile,
                gate_tiles=args.gate_tiles,
                gate_batch=1,
                calibration=calib,
                calibration_tiles=args.calibration_tiles,
                calibration_batch=1,
                seed=args.seed,
            )
            t = time.perf_counter()
            res = export(s, model, info)
            export_s = time.perf_counter() - t
            speed = _time(res.path, tiles, args.batch, args.iters, args.provider, args.threads)
            g = res.gate.metrics
            rows.append(
                {
                    "precision": precision,
                    "size_mb": res.summary["size_bytes"] / 1e6,
                    "export_s": export_s,
                    "latency_ms": speed,
                    "gate_passed": res.gate.passed,
                    "gate": {
                        k: g.get(k)
                        for k in (
                            "fg_agreement",
                            "type_agreement",
                            "hv_mean_abs",
                            "hv_max_abs",
                            "tissue_max_abs",
                            "bpq",
                            "f1",
                        )
                    },
                }
            )
    base = next((r for r in rows if r["precision"] == "fp32"), rows[0])
    name = Path(args.checkpoint).name if args.checkpoint else f"{args.variant} (random weights)"
    print(
        f"\nexport variants: {name}, tile {args.tile}, batch {args.batch}, {args.iters} iters, "
        f"{args.provider}"
    )
    print(
        f"{'precision':<9} {'MB':>7} {'median ms':>10} {'p90 ms':>9} {'tiles/s':>8} {'vs fp32':>8} | "
        f"{'gate':<5} {'fg agr':>8} {'type agr':>8} {'hv mean':>9} {'hv max':>8} {'bPQ':>6} {'F1':>6}"
    )
    for r in rows:
        lat, g = r["latency_ms"], r["gate"]
        ratio = base["latency_ms"]["median"] / lat["median"]

        def f(v, fmt):
            return "n/a" if v is None or (isinstance(v, float) and np.isnan(v)) else format(v, fmt)

        print(
            f"{r['precision']:<9} {r['size_mb']:>7.1f} {lat['median']:>10.1f} {lat['p90']:>9.1f} "
            f"{lat['tiles_per_s']:>8.2f} {ratio:>7.2f}x | {'pass' if r['gate_passed'] else 'FAIL':<5} "
            f"{f(g['fg_agreement'], '.5f'):>8} {f(g['type_agreement'], '.5f'):>8} "
            f"{f(g['hv_mean_abs'], '.2e'):>9} "
            f"{f(g['hv_max_abs'], '.3f'):>8} {f(g['bpq'], '.3f'):>6} {f(g['f1'], '.3f'):>6}"
        )
    print(
        "(vs fp32 = fp32 median / this median; on CPU, FP16 runs through inserted casts: "
        "the FP16/INT8 graphs "
        "are for TensorRT)"
    )
    if args.out:
        args.out.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
