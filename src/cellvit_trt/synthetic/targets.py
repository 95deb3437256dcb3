"""Network training targets from an instance map, exactly as HoVer-Net / CellViT build them.

Upstream: TIO-IKIM/CellViT cell_segmentation/datasets/pannuke.py::PanNukeDataset.gen_instance_hv_map
(HoVer-Net's `gen_instance_hv_map` without the mirror-padding fix). Per instance:

- crop its bounding box, expanded by 2 px where the tile allows;
- centre of mass of the crop, rounded half-up (`int(c + 0.5)`);
- x = (col + 1) - round(com_x), y = (row + 1) - round(com_y) on instance pixels (the +1 is upstream's);
- negative values divided by -min(negative), positive by max(positive), separately per axis (float32),
  so each instance spans [-1, 1] on each side of its centre.

Upstream compares the expanded column bound against the tile *height* (a typo, harmless for the square
PanNuke tiles); this module uses the width, so non-square tiles are handled correctly and square ones match
bit for bit. The expansion and the crop origin cancel out of the values; they only decide the "crop smaller
than 2 px" skip.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from numba import njit

from cellvit_trt.errors import InputError

__all__ = ["Targets", "binary_map", "hv_map", "type_map", "make_targets"]


@dataclass(frozen=True)
class Targets:
    """Training targets of one tile. `hv` channel 0 = horizontal (x), 1 = vertical (y)."""

    inst_map: np.ndarray  # int32 [H, W], 0 = background
    binary: np.ndarray  # uint8 [H, W], 1 = nucleus
    hv: np.ndarray  # float32 [2, H, W] in [-1, 1]
    type_map: np.ndarray  # uint8 [H, W], 0 = background


def _check_inst_map(inst_map: np.ndarray) -> np.ndarray:
    arr = np.asarray(inst_map)
    if arr.ndim != 2 or arr.shape[0] < 1 or arr.shape[1] < 1:
        raise InputError(f"inst_map: expected a 2-D integer array [H, W], got shape {arr.shape}")
    if not np.issubdtype(arr.dtype, np.integer):
        raise InputError(f"inst_map: expected an integer dtype, got {arr.dtype}")
    if arr.size and arr.min() < 0:
        raise InputError("inst_map: labels must be >= 0 (0 = background)")
    if arr.size and arr.max() > np.iinfo(np.int32).max:
        raise InputError("inst_map: labels must fit in int32")
    return np.ascontiguousarray(arr, dtype=np.int32)


def binary_map(inst_map: np.ndarray) -> np.ndarray:
    """uint8 [H, W]: 1 where a nucleus is."""
    return (_check_inst_map(inst_map) > 0).astype(np.uint8)


@njit(nogil=True, cache=True)
def _hv_kernel(inst: np.ndarray, n_labels: int) -> np.ndarray:
    h, w = inst.shape
    rmin = np.full(n_labels + 1, h, np.int64)
    rmax = np.full(n_labels + 1, -1, np.int64)
    cmin = np.full(n_labels + 1, w, np.int64)
    cmax = np.full(n_labels + 1, -1, np.int64)
    cnt = np.zeros(n_labels + 1, np.int64)
    sr = np.zeros(n_labels + 1, np.int64)
    sc = np.zeros(n_labels + 1, np.int64)
    for r in range(h):
        for c in range(w):
            lab = inst[r, c]
            if lab == 0:
                continue
            cnt[lab] += 1
            sr[lab] += r
            sc[lab] += c
            if r < rmin[lab]:
                rmin[lab] = r
            if r > rmax[lab]:
                rmax[lab] = r
            if c < cmin[lab]:
                cmin[lab] = c
            if c > cmax[lab]:
                cmax[lab] = c
    # crop origin (expanded box) and rounded centre of mass in crop coordinates
    valid = np.zeros(n_labels + 1, np.bool_)
    r0 = np.zeros(n_labels + 1, np.int64)
    c0 = np.zeros(n_labels + 1, np.int64)
    comr = np.zeros(n_labels + 1, np.int64)
    comc = np.zeros(n_labels + 1, np.int64)
    for lab in range(1, n_labels + 1):
        if cnt[lab] == 0:
            continue
        b0 = rmin[lab] - 2 if rmin[lab] >= 2 else rmin[lab]
        b2 = cmin[lab] - 2 if cmin[lab] >= 2 else cmin[lab]
        b1 = rmax[lab] + 1
        b1 = b1 + 2 if b1 <= h - 2 else b1
        b3 = cmax[lab] + 1
        b3 = b3 + 2 if b3 <= w - 2 else b3
        if b1 - b0 < 2 or b3 - b2 < 2:
            continue
        valid[lab] = True
        r0[lab] = b0
        c0[lab] = b2
        # sums of integer coordinates are exact in float64, as in scipy.ndimage.center_of_mass
        comr[lab] = int((sr[lab] - cnt[lab] * b0) / cnt[lab] + 0.5)
        comc[lab] = int((sc[lab] - cnt[lab] * b2) / cnt[lab] + 0.5)
    xmin = np.zeros(n_labels + 1, np.int64)
    xmax = np.zeros(n_labels + 1, np.int64)
    ymin = np.zeros(n_labels + 1, np.int64)
    ymax = np.zeros(n_labels + 1, np.int64)
    for r in range(h):
        for c in range(w):
            lab = inst[r, c]
            if lab == 0 or not valid[lab]:
                continue
            x = c - c0[lab] + 1 - comc[lab]
            y = r - r0[lab] + 1 - comr[lab]
            if x < xmin[lab]:
                xmin[lab] = x
            if x > xmax[lab]:
                xmax[lab] = x
            if y < ymin[lab]:
                ymin[lab] = y
            if y > ymax[lab]:
                ymax[lab] = y
    out = np.zeros((2, h, w), np.float32)
    for r in range(h):
        for c in range(w):
            lab = inst[r, c]
            if lab == 0 or not valid[lab]:
                continue
            x = np.float32(c - c0[lab] + 1 - comc[lab])
            y = np.float32(r - r0[lab] + 1 - comr[lab])
            if x < 0:
                x = x / np.float32(-xmin[lab])
            elif x > 0:
                x = x / np.float32(xmax[lab])
            if y < 0:
                y = y / np.float32(-ymin[lab])
            elif y > 0:
                y = y / np.float32(ymax[lab])
            out[0, r, c] = x
            out[1, r, c] = y
    return out


def hv_map(inst_map: np.ndarray) -> np.ndarray:
    """float32 [2, H, W]: per-instance horizontal (0) and vertical (1) distance to the centre, in [-1, 1]."""
    inst = _check_inst_map(inst_map)
    n_labels = int(inst.max()) if inst.size else 0
    return _hv_kernel(inst, n_labels)


def type_map(inst_map: np.ndarray, inst_types: Mapping[int, int] | np.ndarray) -> np.ndarray:
    """uint8 [H, W]: the class of each instance's pixels (0 = background).

    `inst_types` maps instance id -> class id, as a dict or an array indexed by id (entry 0 ignored).
    Instances without an entry are an error, so a mislabelled ground truth cannot pass silently.
    """
    inst = _check_inst_map(inst_map)
    n_labels = int(inst.max()) if inst.size else 0
    lut = np.zeros(n_labels + 1, np.int64)
    present = np.unique(inst)
    present = present[present > 0]
    if isinstance(inst_types, Mapping):
        missing = [int(i) for i in present if int(i) not in inst_types]
        if missing:
            raise InputError(f"inst_types: no class for instance ids {missing[:10]}")
        for i in present:
            lut[int(i)] = int(inst_types[int(i)])
    else:
        arr = np.asarray(inst_types)
        if arr.ndim != 1 or not np.issubdtype(arr.dtype, np.integer) or arr.shape[0] <= n_labels:
            raise InputError(
                f"inst_types: expected a 1-D integer array of length > max id {n_labels}, "
                f"got shape {arr.shape} dtype {arr.dtype}"
            )
        lut[: n_labels + 1] = arr[: n_labels + 1]
        lut[0] = 0
    if lut.min() < 0 or lut.max() > 255:
        raise InputError("inst_types: class ids must be in 0..255")
    return lut[inst].astype(np.uint8)


def make_targets(inst_map: np.ndarray, inst_types: Mapping[int, int] | np.ndarray | None = None) -> Targets:
    """All targets of one tile; without `inst_types` every nucleus is class 1."""
    inst = _check_inst_map(inst_map)
    if inst_types is None:
        tmap = (inst > 0).astype(np.uint8)
    else:
        tmap = type_map(inst, inst_types)
    return Targets(inst_map=inst, binary=(inst > 0).astype(np.uint8), hv=hv_map(inst), type_map=tmap)
