"""One image's labelled instances: an instance map plus per-instance id, type and centroid.

Everything in `cellvit_trt.metrics` works on `Instances`. Ground truth comes from an instance map and a pixel
type map (`from_maps`); predictions come from the post-processor's `TileCells` (`from_tile`) or plain arrays
(`from_cells`). Pixels whose id is not in `ids` count as background: a prediction is exactly the cells in its
table: the upstream evaluation also scores only the cells of its cell dict (type-0 cells and cells without a
valid contour are not there).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from cellvit_trt.errors import InputError

# Beyond this many ids per pixel, a lookup table would waste memory; use np.unique instead.
_LUT_MAX_RATIO = 4


@dataclass(frozen=True)
class Instances:
    """Instances of one image. `ids`, `types` and `centroids` are aligned; centroids are (x, y) pixels."""

    inst_map: np.ndarray  # integer [H, W]; 0 = background
    ids: np.ndarray  # int64 [K], distinct, > 0
    types: np.ndarray  # int64 [K]; 0 = background / unclassified
    centroids: np.ndarray  # float64 [K, 2] = (x, y)
    _labels: np.ndarray | None = field(default=None, repr=False, compare=False)
    # bool [K]: instances that get a cell entry (upstream drops contours of < 3 points); None = all.
    # Only centroid detection looks at it; PQ scores every instance of the map.
    detectable: np.ndarray | None = field(default=None, repr=False, compare=False)

    def detection_view(self) -> tuple[np.ndarray, np.ndarray]:
        """(centroids, types) of the instances that have a cell entry."""
        if self.detectable is None:
            return self.centroids, self.types
        return self.centroids[self.detectable], self.types[self.detectable]

    def labels(self) -> np.ndarray:
        """Flat compact labels: position in `ids` + 1 for each pixel, 0 for background (cached)."""
        if self._labels is None:
            object.__setattr__(self, "_labels", compact_labels(self.inst_map, self.ids)[0])
        return self._labels  # type: ignore[return-value]

    def __len__(self) -> int:
        return int(self.ids.shape[0])

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.inst_map.shape)  # type: ignore[return-value]

    @staticmethod
    def from_maps(
        inst_map: np.ndarray,
        type_map: np.ndarray | None = None,
        *,
        name: str = "ground truth",
        cell_entries: bool = True,
    ) -> Instances:
        """All instances of `inst_map`; each takes the majority type of `type_map` over its pixels.

        The majority follows upstream: ties go to the lower type id; background (0) loses to any other type
        present in the instance. Centroids are pixel means (what `cv2.moments` gives on the binary mask).
        With `cell_entries`, instances whose first contour has < 3 points (1-2 px specks, 1 px lines) are
        left out of centroid detection, as upstream's cell dicts leave them out (`calculate_instances`).
        """
        inst_map = _check_map(inst_map, f"{name} instance map")
        lab, ids = compact_labels(inst_map)
        n = ids.shape[0]
        if type_map is None:
            types = np.zeros(n, np.int64)
        else:
            type_map = _check_map(type_map, f"{name} type map", shape=inst_map.shape)
            types = majority_types(lab, n, type_map)
        det = has_cell_entry(lab.reshape(inst_map.shape), n) if cell_entries else None
        return Instances(inst_map, ids, types, centroids_of(lab, n, inst_map.shape[1]), lab, det)

    @staticmethod
    def from_cells(
        inst_map: np.ndarray, ids: Any, types: Any, centroids: Any | None = None, *, name: str = "prediction"
    ) -> Instances:
        """Instances given by a cell table. Missing centroids are computed from the map."""
        inst_map = _check_map(inst_map, f"{name} instance map")
        ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        types = np.asarray(types, dtype=np.int64).reshape(-1)
        if types.shape != ids.shape:
            raise InputError(f"{name}: 'type' has {types.shape[0]} entries but 'id' has {ids.shape[0]}")
        if ids.size and (ids.min() <= 0 or np.unique(ids).size != ids.size):
            raise InputError(f"{name}: 'id' must hold distinct positive instance ids")
        lab = None
        if centroids is None:
            lab, _ = compact_labels(inst_map, ids)
            centroids = centroids_of(lab, ids.shape[0], inst_map.shape[1])
        else:
            centroids = np.asarray(centroids, dtype=np.float64).reshape(-1, 2)
            if centroids.shape[0] != ids.shape[0]:
                raise InputError(
                    f"{name}: 'centroid' has {centroids.shape[0]} rows but 'id' has {ids.shape[0]}"
                )
        return Instances(inst_map, ids, types, centroids, lab)

    @staticmethod
    def from_tile(tile: Any, *, name: str = "prediction") -> Instances:
        """From `cellvit_trt.kernels.TileCells` (or anything with `inst_map` and `cells.id/type/centroid`)."""
        if isinstance(tile, Instances):
            return tile
        try:
            cells = tile.cells
            return Instances.from_cells(tile.inst_map, cells.id, cells.type, cells.centroid, name=name)
        except AttributeError as exc:
            raise InputError(
                f"{name}: expected TileCells-like (inst_map, cells.id, cells.type, cells.centroid), "
                f"got {type(tile).__name__} ({exc})"
            ) from exc

    def restricted(self, keep: np.ndarray) -> Instances:
        """The same image with only the instances where `keep` (bool [K]) is true."""
        keep = np.asarray(keep, bool)
        if keep.all():
            return self
        lab = None
        if self._labels is not None:
            lut = np.zeros(len(self) + 1, np.int32)
            lut[1:][keep] = np.arange(1, int(keep.sum()) + 1, dtype=np.int32)
            lab = lut[self._labels]
        det = None if self.detectable is None else self.detectable[keep]
        return Instances(self.inst_map, self.ids[keep], self.types[keep], self.centroids[keep], lab, det)


def _check_map(arr: Any, what: str, shape: tuple[int, ...] | None = None) -> np.ndarray:
    arr = np.asarray(arr)
    if arr.ndim != 2:
        raise InputError(f"{what}: expected a 2-D array [H, W], got shape {arr.shape}")
    if shape is not None and arr.shape != shape:
        raise InputError(f"{what}: shape {arr.shape} differs from the instance map's {shape}")
    if arr.dtype.kind == "f":
        if arr.size and not np.all(np.mod(arr, 1) == 0):
            raise InputError(f"{what}: expected integer labels, got non-integer floats")
        arr = arr.astype(np.int64)
    elif arr.dtype.kind == "b":
        arr = arr.astype(np.int64)
    elif arr.dtype.kind not in "iu":
        raise InputError(f"{what}: expected an integer array, got dtype {arr.dtype}")
    if arr.size and arr.dtype.kind == "i" and arr.min() < 0:
        raise InputError(f"{what}: labels must be >= 0, found {arr.min()}")
    return arr


def compact_labels(inst_map: np.ndarray, ids: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Flat labels 1..K (0 = background or an id not in `ids`) and the ids in that order.

    Without `ids`, all present ids are taken in ascending order (HoVer-Net `remap_label` order).
    """
    flat = inst_map.reshape(-1)
    top = int(flat.max()) if flat.size else 0
    if ids is None:
        if top <= _LUT_MAX_RATIO * flat.size + 1024:
            present = np.flatnonzero(np.bincount(flat, minlength=top + 1))
        else:
            present = np.unique(flat)
        ids = present[present > 0].astype(np.int64)
    ids = np.asarray(ids, np.int64)
    if top <= _LUT_MAX_RATIO * flat.size + 1024:
        lut = np.zeros(top + 1, np.int32)
        inside = ids <= top
        lut[ids[inside]] = np.flatnonzero(inside).astype(np.int32) + 1
        return lut[flat], ids
    # Sparse ids: sort-based lookup.
    order = np.argsort(ids)
    sorted_ids = ids[order]
    pos = np.searchsorted(sorted_ids, flat)
    pos_c = np.minimum(pos, max(sorted_ids.size - 1, 0))
    hit = (
        (sorted_ids.size > 0) & (sorted_ids[pos_c] == flat) if sorted_ids.size else np.zeros_like(flat, bool)
    )
    lab = np.zeros(flat.shape, np.int32)
    if sorted_ids.size:
        lab[hit] = order[pos_c[hit]].astype(np.int32) + 1
    return lab, ids


def majority_types(lab: np.ndarray, n: int, type_map: np.ndarray) -> np.ndarray:
    """Majority type per compact label (ties → lower id; background loses to any other type present)."""
    tflat = type_map.reshape(-1).astype(np.int64)
    m = lab > 0
    ntypes = int(tflat.max()) + 1 if tflat.size else 1
    counts = np.bincount((lab[m].astype(np.int64) - 1) * ntypes + tflat[m], minlength=n * ntypes)
    counts = counts.reshape(n, ntypes)
    fg_counts = counts[:, 1:] if ntypes > 1 else np.zeros((n, 0), np.int64)
    types = np.zeros(n, np.int64)
    if fg_counts.shape[1]:
        best = np.argmax(fg_counts, axis=1)  # argmax picks the first (lowest id) on ties
        has_fg = fg_counts[np.arange(n), best] > 0
        types[has_fg] = best[has_fg] + 1
    return types


def centroids_of(lab: np.ndarray, n: int, width: int) -> np.ndarray:
    """Pixel-mean centroids (x, y) per compact label; NaN for labels without pixels."""
    nz = np.flatnonzero(lab)  # only instance pixels: a fraction of the frame
    lab_nz = lab[nz]
    area = np.bincount(lab_nz, minlength=n + 1)[1:].astype(np.float64)
    y, x = np.divmod(nz, width)
    sx = np.bincount(lab_nz, weights=x.astype(np.float64), minlength=n + 1)[1:]
    sy = np.bincount(lab_nz, weights=y.astype(np.float64), minlength=n + 1)[1:]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.stack([sx / area, sy / area], axis=1)


def has_cell_entry(lab2d: np.ndarray, n: int) -> np.ndarray:
    """bool [n]: whether the first contour (cv2 RETR_TREE, CHAIN_APPROX_SIMPLE) of each label's bbox crop has
    >= 3 points, the condition for a cell entry upstream (`_create_single_instance_entry`,
    `calculate_instances`)."""
    import cv2
    from scipy import ndimage as ndi

    ok = np.zeros(n, bool)
    for k, sl in enumerate(ndi.find_objects(lab2d, max_label=n)):
        if sl is None:
            continue
        h, w = sl[0].stop - sl[0].start, sl[1].stop - sl[1].start
        if h == 1 or w == 1:  # a 1 px wide line: its contour has at most 2 points
            continue
        crop = (lab2d[sl] == k + 1).astype(np.uint8)
        ok[k] = cv2.findContours(crop, cv2.RETR_TREE, cv2.CHAIN_APPROX_SIMPLE)[0][0].shape[0] >= 3
    return ok


def remap_label(inst_map: np.ndarray) -> np.ndarray:
    """Contiguous ids 1..K in ascending order of the original ids (HoVer-Net `remap_label`, by_size=False)."""
    inst_map = _check_map(inst_map, "instance map")
    lab, _ = compact_labels(inst_map)
    return lab.reshape(inst_map.shape)
