"""`cellvit-trt synth`: write synthetic H&E tiles or a pyramidal slide, with exact ground truth.

cellvit-trt synth tiles --out tiles/ --count 16 --size 256 --seed 0
cellvit-trt synth slide --out slide.svs --width 4096 --height 3072 --mpp 0.25 --seed 0
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from cellvit_trt.argtypes import fraction, int_range, nonnegative_int, positive_float, positive_int
from cellvit_trt.errors import InputError

PRESET_CHOICES = ("tumour", "glandular", "stroma", "inflamed", "mixed")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="what", metavar="{tiles,slide}", required=True)
    t = sub.add_parser("tiles", help="PNG tiles + .npz ground truth (inst_map, type_map, cells)")
    t.add_argument("--out", type=Path, required=True, help="output folder")
    t.add_argument("--count", type=positive_int, default=8)
    t.add_argument("--size", type=positive_int, default=256, help="tile side in pixels")
    t.add_argument("--seed", type=nonnegative_int, default=0, help="tile i uses seed + i")
    t.add_argument("--mpp", type=positive_float, default=0.25)
    t.add_argument(
        "--preset", choices=PRESET_CHOICES, default=None, help="default: drawn per tile from its seed"
    )
    s = sub.add_parser("slide", help="pyramidal Aperio-style TIFF + <stem>.cells.npz (+ <stem>.labels.tif)")
    s.add_argument("--out", type=Path, required=True, help="slide path (.svs or .tif)")
    s.add_argument("--width", type=positive_int, default=4096)
    s.add_argument("--height", type=positive_int, default=4096)
    s.add_argument("--mpp", type=positive_float, default=0.25)
    s.add_argument("--seed", type=nonnegative_int, default=0)
    s.add_argument("--tile-size", type=positive_int, default=256, help="TIFF tile size")
    s.add_argument("--compression", choices=("jpeg", "deflate", "none"), default="jpeg")
    s.add_argument("--quality", type=int_range(1, 100), default=90, help="JPEG quality")
    s.add_argument("--preset", choices=PRESET_CHOICES, default="mixed")
    s.add_argument("--glass-fraction", type=fraction, default=0.35)
    s.add_argument("--no-labels", action="store_true", help="skip the level-0 instance-label TIFF")


def _tiles(args: argparse.Namespace) -> int:
    import cv2
    import numpy as np

    from cellvit_trt.io import atomic_path, write_bytes
    from cellvit_trt.synthetic.tile import generate_tile
    from cellvit_trt.synthetic.world import TISSUE_NAMES

    if args.count < 1 or args.size < 16:
        raise InputError(f"synth tiles: --count must be >= 1 and --size >= 16, got {args.count}, {args.size}")
    args.out.mkdir(parents=True, exist_ok=True)
    for i in range(args.count):
        seed = args.seed + i
        tile = generate_tile(args.size, seed=seed, mpp=args.mpp, preset=args.preset)
        ok, png = cv2.imencode(".png", np.ascontiguousarray(tile.image[..., ::-1]))
        if not ok:
            raise InputError(f"synth tiles: PNG encoding failed for seed {seed}")
        stem = args.out / f"synthetic_{seed:08d}"
        write_bytes(stem.with_suffix(".png"), png.tobytes())
        with atomic_path(stem.with_suffix(".npz")) as tmp, open(tmp, "wb") as fh:
            np.savez_compressed(
                fh,
                inst_map=tile.inst_map,
                type_map=tile.type_map,
                id=tile.cells.id,
                type=tile.cells.type,
                centroid=tile.cells.centroid,
                area=tile.cells.area,
                bbox=tile.cells.bbox,
                tissue=np.int64(tile.tissue),
                seed=np.int64(seed),
                mpp=np.float64(args.mpp),
            )
        tissue = TISSUE_NAMES[tile.tissue] if tile.tissue >= 0 else "mixed"
        print(f"{stem}.png  {len(tile.cells)} cells  {tissue}")
    return 0


def _slide(args: argparse.Namespace) -> int:
    from cellvit_trt.synthetic.slide import write_synthetic_slide

    truth = write_synthetic_slide(
        args.out,
        args.width,
        args.height,
        mpp=args.mpp,
        seed=args.seed,
        tile_size=args.tile_size,
        compression=args.compression,
        quality=args.quality,
        preset=args.preset,
        glass_fraction=args.glass_fraction,
        write_labels=not args.no_labels,
    )
    print(
        json.dumps(
            {
                "slide": str(truth.slide),
                "cells": str(truth.cells_path),
                "labels": str(truth.labels_path) if truth.labels_path else None,
                "width": truth.width,
                "height": truth.height,
                "mpp": truth.mpp,
                "downsamples": list(truth.levels),
                "n_cells": truth.n_cells,
            },
            indent=2,
        )
    )
    return 0


def run(args: argparse.Namespace) -> int:
    return _tiles(args) if args.what == "tiles" else _slide(args)
