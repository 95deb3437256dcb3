"""A quick-look PNG: cell contours coloured by class over the image of one region window.

    OverlayWriter(path, source, classes, window=None)   # window = (y0, x0, h, w) in region (target-mpp) px;
                                                        # default: the centre 2048 x 2048 of the region
Only cells whose centroid falls in the window are kept (memory bounded by the window); the pixels are read
from the source at close.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from cellvit_trt.io import write_bytes
from cellvit_trt.runtime.cells import CellBatch
from cellvit_trt.runtime.writers.base import ClassTable

WINDOW = 2048  # default window side, region px


def default_window(height: int, width: int, side: int = WINDOW) -> tuple[int, int, int, int]:
    h, w = min(side, height), min(side, width)
    return (height - h) // 2, (width - w) // 2, h, w


def draw_overlay(
    image: np.ndarray, contours: list[np.ndarray], colors: list[tuple[int, int, int]], thickness: int = 2
) -> np.ndarray:
    """Contours (x, y) in image px drawn over a copy of an RGB image."""
    out = np.ascontiguousarray(image.copy())
    for ring, color in zip(contours, colors, strict=True):
        pts = np.round(ring).astype(np.int32).reshape(-1, 1, 2)
        cv2.polylines(out, [pts], True, tuple(int(c) for c in color), thickness, cv2.LINE_AA)
    return out


class OverlayWriter:
    def __init__(
        self, path: str | Path, source, classes: ClassTable, window: tuple[int, int, int, int] | None = None
    ) -> None:
        self.path, self.source, self.classes = Path(path), source, classes
        self.window = window or default_window(source.info.height, source.info.width)
        self._rings: list[np.ndarray] = []
        self._colors: list[tuple[int, int, int]] = []

    def write(self, batch: CellBatch) -> None:
        info = self.source.info
        y0, x0, h, w = self.window
        for i in range(len(batch)):
            cx, cy = (batch.centroid[i] - info.offset) / info.scale
            if x0 <= cx < x0 + w and y0 <= cy < y0 + h:
                ring = (batch.contours[i] - info.offset) / info.scale - (x0, y0)
                self._rings.append(ring)
                self._colors.append(self.classes.color(int(batch.type[i])))

    def close(self, **_: object) -> None:
        y0, x0, h, w = self.window
        image = self.source.read_region(y0, x0, h, w, what="overlay window")
        out = draw_overlay(image, self._rings, self._colors)
        ok, png = cv2.imencode(".png", cv2.cvtColor(out, cv2.COLOR_RGB2BGR))
        if not ok:
            raise RuntimeError(f"{self.path}: PNG encoding failed")
        write_bytes(self.path, png.tobytes())

    def abort(self) -> None:
        self._rings, self._colors = [], []
