"""Seeded synthetic H&E-like tiles and slides with exact ground truth (training targets in `targets`)."""

from cellvit_trt.jit_cache import keyed_cache

with keyed_cache():  # the Numba modules (morphology, targets) are first imported here (test_jit_cache checks)
    from cellvit_trt.synthetic.slide import SlideTruth, load_slide_cells, write_synthetic_slide
    from cellvit_trt.synthetic.tile import CellList, SyntheticTile, generate_tile
    from cellvit_trt.synthetic.world import PRESETS, TISSUE_NAMES, World

__all__ = [
    "PRESETS",
    "TISSUE_NAMES",
    "CellList",
    "SlideTruth",
    "SyntheticTile",
    "World",
    "generate_tile",
    "load_slide_cells",
    "write_synthetic_slide",
]
