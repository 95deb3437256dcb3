"""FLOPs per tile: upstream CellViT (shared skip decoders recomputed in each of the 3 branches) vs cellvit_trt
(computed once). Counted with torch's FlopCounterMode on the meta device (no memory, seconds).

    .venv/bin/python benchmarks/flops.py [--size 1024] [--no-oracle]

"upstream" is counted on the cellvit==1.0.9 model itself when it is installed (and must equal
ours + 2 x skip decoders); with --no-oracle it is that analytic sum.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from cellvit_trt.models import build_model
from cellvit_trt.models.flops import count_flops, flop_report

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the upstream oracle

VARIANTS = ("CellViT256", "SAM-B", "SAM-L", "SAM-H", "tiny")
UPSTREAM = ("CellViT256", "SAM-B", "SAM-L", "SAM-H")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=1024, help="square tile side in pixels (multiple of 16)")
    ap.add_argument("--no-oracle", action="store_true", help="do not count the upstream model itself")
    args = ap.parse_args()
    print(f"Forward FLOPs per {args.size}x{args.size} tile, batch 1 (TFLOP = 1e12, 2 FLOPs per MAC)")
    print(
        f"{'variant':<11} {'params M':>9} {'upstream':>10} {'ours':>10} {'saved':>9} {'saved %':>8}"
        "  upstream source"
    )
    for variant in VARIANTS:
        with torch.device("meta"):
            model = build_model(variant).eval()
        rep = flop_report(model, args.size)
        upstream, source = rep.upstream_style, "ours + 2 x skip decoders"
        if variant in UPSTREAM and not args.no_oracle:
            from upstream_oracle import upstream_model

            counted = count_flops(
                upstream_model(variant, device="meta"), torch.empty(1, 3, args.size, args.size, device="meta")
            )
            source = "counted on cellvit==1.0.9" + (
                "" if counted == upstream else f" (analytic {upstream / 1e12:.4f})"
            )
            upstream = counted
        params = sum(p.numel() for p in model.parameters()) / 1e6
        saved = upstream - rep.ours
        print(
            f"{variant:<11} {params:>9.2f} {upstream / 1e12:>10.4f} {rep.ours / 1e12:>10.4f} "
            f"{saved / 1e12:>9.4f} "
            f"{100 * saved / upstream:>7.1f}%  {source}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
