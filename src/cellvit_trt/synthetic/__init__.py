"""Seeded synthetic H&E-like tiles and slides with exact ground truth (training targets in `targets`)."""

from cellvit_trt.jit_cache import keyed_cache

with keyed_cache():  # the Numba modules (morphology, targets) are first imported here: cached by source
    from cellvit_trt.synthetic import morphology, targets  # noqa: F401
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
