"""`cellvit-trt train`: train a CellViT variant on synthetic tiles (upstream losses, AdamW, CPU).

    cellvit-trt train --out my-model.pth --steps 220 --fine-steps 30 --seed 0
    cellvit-trt train --config train.yaml --evaluate 16

The shipped demo model (`cellvit_trt.data.demo_checkpoint_path()`) was trained with the defaults below; see
docs/synthetic.md for its command, wall time and accuracy.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from cellvit_trt.argtypes import nonnegative_float, nonnegative_int, positive_float, positive_int
from cellvit_trt.config import add_config_argument


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_argument(parser)
    parser.add_argument("--variant", default=None, help="model variant (default tiny)")
    parser.add_argument("--out", type=Path, default=None, help="checkpoint to write (official format)")
    parser.add_argument("--seed", type=nonnegative_int, default=None)
    parser.add_argument("--steps", type=nonnegative_int, default=None, help="steps on crops (phase 1)")
    parser.add_argument(
        "--crop-tiles", dest="crop_tiles", type=positive_int, default=None, help="tiles per phase-1 step"
    )
    parser.add_argument("--crops-per-side", dest="crops_per_side", type=positive_int, default=None)
    parser.add_argument(
        "--fine-steps", dest="fine_steps", type=nonnegative_int, default=None, help="steps on full tiles"
    )
    parser.add_argument("--fine-tiles", dest="fine_tiles", type=positive_int, default=None)
    parser.add_argument("--tile-size", dest="tile_size", type=positive_int, default=None)
    parser.add_argument("--lr", type=positive_float, default=None)
    parser.add_argument("--weight-decay", dest="weight_decay", type=nonnegative_float, default=None)
    parser.add_argument("--warmup-steps", dest="warmup_steps", type=nonnegative_int, default=None)
    parser.add_argument("--threads", type=positive_int, default=None, help="torch CPU threads")
    parser.add_argument(
        "--max-minutes", dest="max_minutes", type=positive_float, default=None, help="stop early and save"
    )
    parser.add_argument(
        "--tissue-weight",
        dest="tissue_weight",
        type=nonnegative_float,
        default=None,
        help="weight of the tissue cross entropy (0 ignores the tissue head)",
    )
    parser.add_argument("--save-every", dest="save_every", type=positive_int, default=None)
    parser.add_argument("--init", type=Path, default=None, help="start from this checkpoint's weights")
    parser.add_argument(
        "--data-offset",
        dest="data_offset",
        type=nonnegative_int,
        default=None,
        help="first tile index of the training stream (use a fresh range when continuing)",
    )
    parser.add_argument(
        "--evaluate",
        type=nonnegative_int,
        default=0,
        metavar="N",
        help="after training, evaluate on N held-out synthetic tiles",
    )


def run(args: argparse.Namespace) -> int:
    import logging

    from cellvit_trt.config import resolve
    from cellvit_trt.training.trainer import TrainSettings, train

    settings = resolve(TrainSettings, args, section="train")
    if not logging.getLogger().isEnabledFor(logging.INFO):
        logging.getLogger("cellvit_trt.training").setLevel(logging.INFO)
        logging.getLogger("cellvit_trt.training").addHandler(logging.StreamHandler())
    summary = train(settings)
    print(json.dumps(summary, indent=2, default=str))
    if args.evaluate:
        from cellvit_trt.models import load_checkpoint
        from cellvit_trt.training.evaluate import evaluate_model, summary_line

        model, _ = load_checkpoint(settings.out)
        print(summary_line(evaluate_model(model, n_tiles=args.evaluate)))
    return 0
