"""Are the region kernels bit-identical to the OpenCV calls upstream makes, on this machine? Checked once.

The region-restricted path (`postprocess._labels_by_region`) re-implements, pixel by pixel, three OpenCV
calls whose rounding depends on the code path OpenCV's CPU dispatcher picks: Sobel (`sobel.use_numba_sobel`),
`normalize(NORM_MINMAX, CV_32F)` from float32 and float64 (`fp.normalize_params` + one fused multiply-add) and
the 3x3 Gaussian blur (`local_relief.blur_whole`, `blur_at.relief_at_components`). Each is compared with
OpenCV on random probes, once per process and parameter set; if any differs, the post-processor uses the
whole-tile path, which calls OpenCV itself. The region path also needs what it was built for: a 3x3 blur.
"""

from __future__ import annotations

import threading

import cv2
import numpy as np
from numba import njit

from cellvit_trt.kernels.blur_at import relief_at_components
from cellvit_trt.kernels.fp import fma32, fma64, normalize_params
from cellvit_trt.kernels.local_relief import blur_whole
from cellvit_trt.kernels.params import PostProcessParams
from cellvit_trt.kernels.sobel import use_numba_sobel

__all__ = ["region_path_ok", "gaussian_taps"]

_LOCK = threading.Lock()
_RESULTS: dict[tuple, bool] = {}


@njit(nogil=True, cache=True)
def _convert(x, scale, shift, single):
    """convertTo(CV_32F, scale, shift) as OpenCV's SIMD code does it: one fused multiply-add, in float32 for a
    float32 source (`single`), in float64 then rounded for a float64 one."""
    out = np.empty(x.shape, np.float32)
    fo = out.reshape(-1)
    fx = x.reshape(-1)
    for i in range(fx.shape[0]):
        if single:
            fo[i] = fma32(np.float32(fx[i]), np.float32(scale), np.float32(shift))
        else:
            fo[i] = np.float32(fma64(np.float64(fx[i]), scale, shift))
    return out


def gaussian_taps(ksize: int) -> np.ndarray:
    """The float64 taps of cv2.GaussianBlur(ksize, sigma 0)."""
    return np.ascontiguousarray(cv2.getGaussianKernel(ksize, 0, cv2.CV_64F).ravel())


def _normalize_same(rng) -> bool:
    for scale_up in (1.0, 1e-3, 3e4):
        x32 = (rng.normal(0, 1, (61, 67)) * scale_up).astype(np.float32)
        ref = cv2.normalize(x32, None, 0, 1, cv2.NORM_MINMAX, cv2.CV_32F)
        s, t = normalize_params(float(x32.min()), float(x32.max()))
        if not np.array_equal(_convert(x32, s, t, True), ref):
            return False
        x64 = rng.normal(0, 1, (61, 67)) * scale_up * 1e9
        ref = cv2.normalize(x64, None, 0, 1, cv2.NORM_MINMAX, cv2.CV_32F)
        s, t = normalize_params(float(x64.min()), float(x64.max()))
        if not np.array_equal(_convert(x64, s, t, False), ref):
            return False
    return True


def _blur_same(rng) -> bool:
    x = rng.random((37, 53))
    x[rng.random(x.shape) < 0.4] = 0.0
    ref = cv2.GaussianBlur(x, (3, 3), 0)
    ones, taps = np.ones(x.shape, np.int32), gaussian_taps(3)
    whole = np.empty_like(x)
    blur_whole(ones, x, taps, whole)
    one_component = (np.ones(2, np.bool_), np.arange(x.size), np.array([0, 0, x.size]))
    at = np.empty_like(x)
    relief_at_components(*one_component, x, ones, taps, at)
    return bool(np.array_equal(-whole, ref) and np.array_equal(-at, ref))


def region_path_ok(params: PostProcessParams) -> bool:
    """True when the region-restricted kernels reproduce OpenCV bit for bit here, for these parameters."""
    key = (params.sobel_ksize, params.blur_ksize)
    with _LOCK:
        if key not in _RESULTS:
            ok = params.blur_ksize == 3 and use_numba_sobel(params.sobel_ksize)
            rng = np.random.default_rng(2024)
            ok = ok and _normalize_same(rng) and _blur_same(rng)
            _RESULTS[key] = bool(ok)
        return _RESULTS[key]
