"""Cell table (struct of arrays) and the per-tile result, as fixed in docs/ARCHITECTURE.md (Kernels)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = ["CellTable", "TileCells"]


@dataclass(frozen=True)
class CellTable:
    """One row per reported cell, ascending id. Coordinates are tile pixels.

    - `id` int32[N]: the cell's label in the tile's instance map;
    - `bbox` int32[N,4]: (rmin, cmin, rmax+1, cmax+1);
    - `centroid` float64[N,2]: (x, y);
    - `area` int32[N]: pixels;
    - `type` int16[N]: majority class (never 0 when background cells are dropped);
    - `type_prob` float32[N]: pixel fraction of that class, count / (area + 1e-6) as upstream;
    - `type_count` int32[N]: pixels of that class (upstream's float64 `type_prob` stays recoverable);
    - `contours`: list of int32[K,2] (x, y), the first OpenCV contour of the cell (K >= 3).
    """

    id: np.ndarray
    bbox: np.ndarray
    centroid: np.ndarray
    area: np.ndarray
    type: np.ndarray
    type_prob: np.ndarray
    type_count: np.ndarray
    contours: list = field(default_factory=list)

    def __len__(self) -> int:
        return int(self.id.shape[0])

    @classmethod
    def empty(cls) -> CellTable:
        return cls(
            id=np.zeros(0, np.int32),
            bbox=np.zeros((0, 4), np.int32),
            centroid=np.zeros((0, 2), np.float64),
            area=np.zeros(0, np.int32),
            type=np.zeros(0, np.int16),
            type_prob=np.zeros(0, np.float32),
            type_count=np.zeros(0, np.int32),
            contours=[],
        )

    def upstream_type_prob(self) -> np.ndarray:
        """float64 type_prob exactly as upstream computes it: count / (area + 1e-6)."""
        return self.type_count.astype(np.float64) / (self.area.astype(np.int64) + 1.0e-6)

    def to_upstream_dict(self) -> dict[int, dict]:
        """`{id: {bbox, centroid, contour, type_prob, type}}` in the layout of cellvit's `post_process_batch`.

        bbox is int64 [[rmin, cmin], [rmax+1, cmax+1]], centroid float64 [x, y], contour int32 [K, 2] (x, y),
        type_prob a Python float, type a Python int.
        """
        probs = self.upstream_type_prob()
        out: dict[int, dict] = {}
        for i in range(len(self)):
            b = self.bbox[i].astype(np.int64)
            out[int(self.id[i])] = {
                "bbox": np.array([[b[0], b[1]], [b[2], b[3]]], dtype=np.int64),
                "centroid": self.centroid[i].copy(),
                "contour": self.contours[i].copy(),
                "type_prob": float(probs[i]),
                "type": int(self.type[i]),
            }
        return out


@dataclass(frozen=True)
class TileCells:
    """Result of one tile: the full instance map (every instance, 1..N) and the table of reported cells."""

    inst_map: np.ndarray  # int32 [H, W]
    cells: CellTable

    @property
    def n_instances(self) -> int:
        return int(self.inst_map.max()) if self.inst_map.size else 0
