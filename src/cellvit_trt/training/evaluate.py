"""Accuracy of a checkpoint on held-out synthetic tiles: PyTorch forward -> kernels.PostProcessor -> metrics.

Held-out tiles use seeds `EVAL_SEED_BASE + i`, which training never draws. The decisions mirror the deployment
graph: fg = argmax of the binary softmax, type_map = argmax of the type softmax, hv raw.

    python -m cellvit_trt.training.evaluate --checkpoint src/cellvit_trt/data/cellvit-tiny-synthetic-demo.pth
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from cellvit_trt.argtypes import nonnegative_int, positive_int
from cellvit_trt.training.data import EVAL_SEED_BASE


def predict_maps(model, images: np.ndarray, batch_size: int = 4) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(fg uint8 [N,H,W], hv float32 [N,2,H,W], type_map uint8 [N,H,W]) for uint8 RGB images [N,H,W,3]."""
    import torch

    fgs, hvs, tms = [], [], []
    model.eval()
    with torch.inference_mode():
        for i in range(0, images.shape[0], batch_size):
            x = (
                torch.from_numpy(images[i : i + batch_size])
                .permute(0, 3, 1, 2)
                .float()
                .div_(255.0)
                .sub_(0.5)
                .div_(0.5)
            )
            out = model(x)
            fgs.append(out["nuclei_binary_map"].argmax(1).to(torch.uint8).numpy())
            hvs.append(out["hv_map"].float().numpy())
            tms.append(out["nuclei_type_map"].argmax(1).to(torch.uint8).numpy())
    return np.concatenate(fgs), np.concatenate(hvs), np.concatenate(tms)


def evaluate_model(
    model,
    n_tiles: int = 16,
    tile_size: int = 256,
    seed_base: int = EVAL_SEED_BASE,
    mpp: float = 0.25,
    batch_size: int = 4,
) -> dict:
    """Metrics report (cellvit_trt.metrics format) of `model` on `n_tiles` held-out synthetic tiles."""
    from cellvit_trt.kernels import PostProcessor, PostProcessParams
    from cellvit_trt.metrics import Evaluator, Instances
    from cellvit_trt.synthetic.tile import generate_tile
    from cellvit_trt.synthetic.world import TISSUE_NAMES

    t0 = time.perf_counter()
    tiles = [generate_tile(tile_size, seed=seed_base + i, mpp=mpp) for i in range(n_tiles)]
    fg, hv, tm = predict_maps(model, np.stack([t.image for t in tiles]), batch_size)
    pp = PostProcessor(PostProcessParams.for_magnification(40 if mpp < 0.375 else 20))
    ev = Evaluator(num_classes=6, magnification=40 if mpp < 0.375 else 20)
    for i, tile in enumerate(tiles):
        pred = pp.process_tile(fg[i], hv[i], tm[i])
        ev.add(
            Instances.from_maps(tile.inst_map, tile.type_map),
            Instances.from_tile(pred),
            TISSUE_NAMES[tile.tissue] if tile.tissue >= 0 else "mixed",
        )
    report = ev.result()
    report["setup"] = {
        "tiles": n_tiles,
        "tile_size": tile_size,
        "seed_base": seed_base,
        "mpp": mpp,
        "seconds": round(time.perf_counter() - t0, 1),
    }
    return report


def summary_line(report: dict) -> str:
    d = report["dataset"]
    f = lambda v: "nan" if v is None else f"{v:.4f}"  # noqa: E731
    return (
        f"bPQ {f(d['bPQ'])}  mPQ {f(d['mPQ'])}  F1 {f(d['f1'])}  "
        f"(P {f(d['precision'])}, R {f(d['recall'])})  "
        f"tiles {report['setup']['tiles']} x {report['setup']['tile_size']}px"
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="evaluate a CellViT checkpoint on held-out synthetic tiles")
    p.add_argument(
        "--checkpoint", type=Path, default=None, help="checkpoint (default: the shipped demo model)"
    )
    p.add_argument("--tiles", type=positive_int, default=16)
    p.add_argument("--tile-size", type=positive_int, default=256)
    p.add_argument("--seed-base", type=nonnegative_int, default=EVAL_SEED_BASE)
    p.add_argument(
        "--threads", type=positive_int, default=1, help="torch threads (1 is fastest on a shared CPU)"
    )
    p.add_argument("--json", type=Path, default=None, help="also write the full report here")
    args = p.parse_args(argv)
    import torch

    from cellvit_trt.data import demo_checkpoint_path
    from cellvit_trt.models import load_checkpoint

    torch.set_num_threads(args.threads)
    model, _ = load_checkpoint(args.checkpoint or demo_checkpoint_path())
    report = evaluate_model(model, args.tiles, args.tile_size, args.seed_base)
    print(summary_line(report))
    for name, c in report["per_class"].items():
        print(
            f"  {name:13s} PQ {c['pq'] if c['pq'] is not None else float('nan'):.4f}  "
            f"F1 {c['f1'] if c['f1'] is not None else float('nan'):.4f}  n_true {c['n_true']}"
        )
    if args.json:
        from cellvit_trt.io import write_json

        write_json(args.json, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
