"""Watershed relief and markers from the HV maps (upstream `_proc_np_hv` steps 2-6), same arithmetic.

OpenCV does min-max normalisation, Gaussian blur and the opening (the calls upstream makes, so their rounding
is reproduced by construction, and they release the GIL); the Sobel filters go through `sobel.sobel`
(bit-identical). Numba fuses the element-wise steps and keeps upstream's dtype promotions:

- `1 - normalize(sobel)` is float32 (python int minus a float32 array);
- `overall - (1 - blb)` promotes to float64 because blb is int32; negatives become 0;
- `dist = (1.0 - overall) * blb` is float64, then blurred (3x3 Gaussian, sigma from size) and negated;
- `marker = blb - (overall >= 0.4)`, negatives become 0.
"""

from __future__ import annotations

import cv2
import numpy as np
from numba import njit

from cellvit_trt.kernels.sobel import sobel

__all__ = ["minmax01", "relief_and_markers"]


def minmax01(channel: np.ndarray) -> np.ndarray:
    """cv2.normalize(..., 0, 1, NORM_MINMAX, CV_32F): whole-map min-max; a constant map becomes all zeros."""
    return cv2.normalize(channel, None, alpha=0, beta=1, norm_type=cv2.NORM_MINMAX, dtype=cv2.CV_32F)


@njit(nogil=True, cache=True)
def _fuse(nsh: np.ndarray, nsv: np.ndarray, blb: np.ndarray, marker_threshold: float):
    h, w = blb.shape
    dist = np.empty((h, w), np.float64)
    marker = np.empty((h, w), np.uint8)
    one32 = np.float32(1.0)
    for r in range(h):
        for c in range(w):
            a = one32 - nsh[r, c]
            b = one32 - nsv[r, c]
            o32 = a if a >= b else b
            fb = np.float64(blb[r, c])
            overall = np.float64(o32) - (1.0 - fb)
            if overall < 0.0:
                overall = 0.0
            dist[r, c] = (1.0 - overall) * fb
            m = blb[r, c] - (1 if overall >= marker_threshold else 0)
            marker[r, c] = 1 if m > 0 else 0
    return dist, marker


def relief_and_markers(
    hv: np.ndarray, blb: np.ndarray, sobel_ksize: int, marker_threshold: float, blur_ksize: int
) -> tuple[np.ndarray, np.ndarray]:
    """(relief float64 [H,W] = -blur(dist), raw marker mask uint8 [H,W]) from hv f32 [2,H,W], blb u8."""
    h_dir = minmax01(hv[0])
    v_dir = minmax01(hv[1])
    sobelh = sobel(h_dir, 1, sobel_ksize)
    sobelv = sobel(v_dir, 0, sobel_ksize)
    dist, marker = _fuse(minmax01(sobelh), minmax01(sobelv), blb, float(marker_threshold))
    relief = cv2.GaussianBlur(dist, (blur_ksize, blur_ksize), 0)
    np.negative(relief, out=relief)
    return relief, marker


_ELLIPSES: dict[int, np.ndarray] = {}


def structuring_ellipse(size: int) -> np.ndarray:
    """cv2.getStructuringElement(MORPH_ELLIPSE, (size, size)), made once per size."""
    kernel = _ELLIPSES.get(size)
    if kernel is None:
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (size, size))
        _ELLIPSES[size] = kernel
    return kernel


def open_ellipse(marker: np.ndarray, size: int, out: np.ndarray | None = None) -> np.ndarray:
    """cv2.morphologyEx(MORPH_OPEN) with the size x size elliptic element (default border handling), into
    `out` if given."""
    return cv2.morphologyEx(marker, cv2.MORPH_OPEN, structuring_ellipse(size), dst=out)
