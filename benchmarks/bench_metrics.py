"""Metric speed on a synthetic PanNuke-sized fold: ours vs the literal HoVer-Net/CellViT formulas.

    .venv/bin/python benchmarks/bench_metrics.py [--images 2700] [--ref-images 60]

Prints the time for the whole fold with `cellvit_trt.metrics.Evaluator` (bPQ, mPQ, mPQ+, detection and
per-class F1, tissue averages), the reference's time on a subset extrapolated to the fold, and the ratio.
The reference is tests/metrics/metrics_reference.py (per-instance full-frame masks, as upstream).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "metrics"))
from metrics_reference import perturb, random_instance_map, ref_dataset  # noqa: E402

from cellvit_trt.classes import PANNUKE_TISSUE  # noqa: E402
from cellvit_trt.metrics import Evaluator, Instances  # noqa: E402

TISSUES = list(PANNUKE_TISSUE)


def make_fold(n: int, seed: int = 0, size: int = 256):
    rng = np.random.default_rng(seed)
    data = []
    for _ in range(n):
        g = random_instance_map(rng, size, int(rng.integers(0, 80)), r=(4, 10))
        p = perturb(rng, g, shift=2, drop=0.1, extra=4)
        g_ids = np.unique(g)[1:]
        p_ids = np.unique(p)[1:]
        g_types = {int(i): int(rng.integers(1, 6)) for i in g_ids}
        p_types = {int(i): int(rng.integers(0, 6)) for i in p_ids}
        data.append((g, g_types, p, p_types, TISSUES[int(rng.integers(0, len(TISSUES)))]))
    return data


def run_ours(data) -> tuple[float, float, dict]:
    """Ground truth from maps (majority types, cell-entry check), predictions from cell tables, as in use.
    Returns (wall s, CPU s of this process, report): on a shared machine the CPU time is the stable figure."""
    t0, c0 = time.perf_counter(), time.process_time()
    ev = Evaluator(num_classes=6, magnification=40)
    for g, gt, p, pt, tissue in data:
        lut = np.zeros(int(g.max()) + 1, np.int64)
        lut[np.fromiter(gt, np.int64, len(gt))] = np.fromiter(gt.values(), np.int64, len(gt))
        true = Instances.from_maps(g, lut[g])
        pi = np.fromiter(pt, np.int64, len(pt))
        pred = Instances.from_cells(p, pi, [pt[i] for i in pi])
        ev.add(true, pred, tissue)
    res = ev.result()
    return time.perf_counter() - t0, time.process_time() - c0, res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=2700)
    ap.add_argument("--ref-images", type=int, default=60, help="images timed with the slow reference")
    ap.add_argument(
        "--distinct",
        type=int,
        default=300,
        help="distinct synthetic images, cycled to --images (generation is slow, scoring is not)",
    )
    args = ap.parse_args()
    t0 = time.perf_counter()
    base = make_fold(min(args.distinct, args.images))
    data = [base[i % len(base)] for i in range(args.images)]
    cells = sum(len(d[1]) for d in data)
    print(
        f"synthetic fold: {args.images} images of 256x256 ({len(base)} distinct), {cells} true cells "
        f"(generated in {time.perf_counter() - t0:.1f} s)"
    )
    ours, ours_cpu, res = run_ours(data)
    d = res["dataset"]
    print(
        f"ours      : {ours:7.2f} s wall, {ours_cpu:.2f} s CPU for the fold "
        f"({1e3 * ours_cpu / args.images:.2f} ms CPU/image)  "
        f"bPQ {d['bPQ']:.4f} mPQ {d['mPQ']:.4f} F1 {d['f1']:.4f}"
    )
    sub = data[: args.ref_images]
    c0 = time.process_time()
    ref_dataset([(g, gt) for g, gt, *_ in sub], [(p, pt) for _, _, p, pt, _ in sub])
    ref = (time.process_time() - c0) / len(sub) * args.images
    print(f"reference : {ref:7.2f} s CPU for the fold (extrapolated from {len(sub)} images)")
    _, sub_cpu, _ = run_ours(sub)
    print(
        f"speed-up  : {ref / ours_cpu:.1f}x in CPU time (on the subset itself: "
        f"{(ref / args.images * len(sub)) / sub_cpu:.1f}x)"
    )

if __name__ == "__main__":
    main()
