"""Which pyramid level to read and how much to resample, to reach the model's target mpp.

Follows upstream (PathoPatcher LivePatchWSIDataset._prepare_slide, cellvit wsi_meta): a slide whose mpp is
within the tolerance of the target is used as is; otherwise the slide is read from the best pyramid level and
resampled with Lanczos by a rescaling factor. Slides coarser than 3x the target (mpp > 0.75 for x40) are
refused, as upstream.

    choice = choose_level(path, base_mpp, level_downsamples, target_mpp)
    choice.level, choice.resample      # read this level; resample = level px per target px (1.0: none)
    choice.scale                       # level-0 px per target px: cells are reported as target_xy * scale
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from cellvit_trt.errors import InputError

# Upstream target_mpp_tolerance = 0.035 at 0.25 mpp (cellvit inference.py). We keep it relative (14 %) so
# that a 0.5 mpp target gets the same slack (Hamamatsu x20 slides are 0.44 mpp, like x40 at 0.22).
MPP_TOLERANCE = 0.035
MPP_TOLERANCE_AT = 0.25
# Upstream rejects mpp > 0.75 for the 0.25 target: never upsample by more than 3x.
MAX_UPSAMPLE = 3.0
TARGET_MPPS = {40: 0.25, 20: 0.5}


def tolerance_for(target_mpp: float) -> float:
    return MPP_TOLERANCE * target_mpp / MPP_TOLERANCE_AT


@dataclasses.dataclass(frozen=True)
class LevelChoice:
    level: int
    level_downsample: float  # level-0 px per level px
    level_mpp: float
    resample: float  # level px per target px; 1.0 means no resampling
    target_mpp: float  # mpp of the delivered tiles (the slide's own mpp when within tolerance)

    @property
    def scale(self) -> float:
        """Level-0 px per target px."""
        return self.level_downsample * self.resample


def choose_level(
    name: str, base_mpp: float, level_downsamples: Sequence[float], target_mpp: float
) -> LevelChoice:
    """Pick the level to read: the coarsest level not coarser than the target (plus tolerance)."""
    if not base_mpp > 0:
        raise InputError(f"{name}: slide mpp must be positive, got {base_mpp}")
    if base_mpp > MAX_UPSAMPLE * target_mpp:
        raise InputError(
            f"{name}: slide resolution {base_mpp:.4f} mpp is too coarse for target {target_mpp} mpp "
            f"(max {MAX_UPSAMPLE * target_mpp:.2f}); use a model for a lower magnification"
        )
    tol = tolerance_for(target_mpp)
    levels = [(i, float(d), base_mpp * float(d)) for i, d in enumerate(level_downsamples)]
    close = [lv for lv in levels if abs(lv[2] - target_mpp) <= tol]
    if close:
        # within tolerance: read as is, like upstream; the tiles then have the level's own mpp
        i, d, mpp = min(close, key=lambda lv: abs(lv[2] - target_mpp))
        return LevelChoice(i, d, mpp, 1.0, mpp)
    finer = [lv for lv in levels if lv[2] < target_mpp]
    i, d, mpp = max(finer, key=lambda lv: lv[2]) if finer else levels[0]
    return LevelChoice(i, d, mpp, target_mpp / mpp, target_mpp)
