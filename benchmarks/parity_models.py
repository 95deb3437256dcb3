"""Parity of cellvit_trt's CellViT against upstream cellvit==1.0.9: max |ours - upstream| per output (FP32).

    .venv/bin/python benchmarks/parity_models.py [--quick]

Random seeded weights (every state-dict tensor, BN statistics and pos/rel-pos tables included) are copied
strictly from the upstream model into ours; both run the same seeded input.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the upstream oracle
from upstream_oracle import max_abs_diff, randomized_pair  # noqa: E402

CASES = [
    # variant, (B, H, W), regression_loss, retrieve_tokens
    ("CellViT256", (2, 256, 256), False, True),
    ("CellViT256", (1, 256, 256), True, True),
    ("SAM-B", (2, 256, 256), False, True),
    ("SAM-B", (1, 256, 256), True, True),
    ("SAM-B", (1, 512, 512), False, False),
    ("CellViT256", (1, 1024, 1024), False, True),
]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="skip the 1024² case (about 1 min on 2 cores)")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(
        f"{'variant':<11} {'input':<14} {'reg':<4} {'tok':<4} {'upstream s':>10} {'ours s':>7}"
        "  max |diff| per output"
    )
    worst = 0.0
    for i, (variant, shape, regression, tokens) in enumerate(CASES):
        if args.quick and shape[1] > 512:
            continue
        up, ours = randomized_pair(variant, regression, seed=i + 1)
        x = torch.randn(shape[0], 3, *shape[1:], generator=torch.Generator().manual_seed(i))
        with torch.no_grad():
            t0 = time.perf_counter()
            a = up(x, retrieve_tokens=tokens)
            t1 = time.perf_counter()
            b = ours(x, retrieve_tokens=tokens)
            t2 = time.perf_counter()
        diffs = max_abs_diff(a, b)
        worst = max(worst, *diffs.values())
        print(
            f"{variant:<11} {'x'.join(map(str, shape)):<14} {str(regression)[0]:<4} {str(tokens)[0]:<4} "
            f"{t1 - t0:>10.2f} {t2 - t1:>7.2f}  " + ", ".join(f"{k} {v:.1e}" for k, v in diffs.items())
        )
        del up, ours, a, b
    print(f"worst max |diff|: {worst:.1e} (gate 1e-5)")
    return 0 if worst <= 1e-5 else 1


if __name__ == "__main__":
    raise SystemExit(main())
