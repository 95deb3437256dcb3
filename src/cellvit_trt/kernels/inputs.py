"""Checks and conversions of the per-tile maps the deployment graph delivers (docs/ARCHITECTURE.md)."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from cellvit_trt.errors import InputError
from cellvit_trt.kernels.halfs import half_extremes

__all__ = ["Batch", "as_batch"]


def _array(name: str, value) -> np.ndarray:
    if not isinstance(value, np.ndarray):
        try:
            value = np.asarray(value)
        except Exception as exc:  # noqa: BLE001 - any conversion failure is a user input problem
            raise InputError(f"{name}: expected a numpy array, got {type(value).__name__} ({exc})") from exc
    return value


def _check_finite(name: str, arr: np.ndarray) -> None:
    if not np.isfinite(arr).all():
        bad = int(arr.size - np.count_nonzero(np.isfinite(arr)))
        raise InputError(f"{name}: {bad} NaN or infinite values; expected finite numbers")


def _foreground(fg: np.ndarray, threshold: float) -> np.ndarray:
    if fg.dtype == np.bool_:
        return fg.view(np.uint8)
    if fg.dtype == np.uint8:
        if fg.size and int(fg.max()) > 1:
            raise InputError(
                "fg: uint8 values must be 0/1 (argmax of the binary softmax), "
                f"got a maximum of {int(fg.max())}; "
                "pass a float32 probability map instead"
            )
        return fg
    if fg.dtype in (np.float16, np.float32, np.float64):
        _check_finite("fg", fg)
        if fg.size and (float(fg.min()) < 0.0 or float(fg.max()) > 1.0):
            raise InputError(
                f"fg: a float map must be a foreground probability in [0, 1], got range "
                f"[{float(fg.min()):.4g}, {float(fg.max()):.4g}] (logits? apply softmax first)"
            )
        # argmax of (1 - p, p) with ties to background == p > 0.5
        return (fg > threshold).view(np.uint8)
    raise InputError(f"fg: expected dtype uint8, bool or float (probability), got {fg.dtype}")


class Batch(NamedTuple):
    """Checked, contiguous maps of a batch of tiles."""

    fg: np.ndarray  # uint8 [N, H, W] in {0, 1}
    hv: np.ndarray  # float32 [N, 2, H, W], or float16 as given (the kernels decode it where they read it)
    type_map: np.ndarray  # uint8 [N, H, W]
    batched: bool  # the input had a batch axis
    hv_range: np.ndarray | None  # float64 [N, 2, 2]: (min, max) per tile and channel, when found in passing


def as_batch(fg, hv, type_map, fg_threshold: float = 0.5) -> Batch:
    """Validate one tile ([H,W], [2,H,W], [H,W]) or a batch ([N,H,W], [N,2,H,W], [N,H,W]).

    A float16 hv stays float16 (no 4-byte copy of it: the kernels read the halves); its check for inf/NaN
    gives its per-channel extremes in passing (`Batch.hv_range`), other dtypes leave them to the caller.
    """
    fg = _array("fg", fg)
    hv = _array("hv", hv)
    type_map = _array("type_map", type_map)
    if fg.ndim not in (2, 3):
        raise InputError(f"fg: expected shape [H, W] or [N, H, W], got {fg.shape}")
    batched = fg.ndim == 3
    want_hv = 4 if batched else 3
    if hv.ndim != want_hv:
        raise InputError(
            f"hv: expected shape {'[N, 2, H, W]' if batched else '[2, H, W]'} to go with fg {fg.shape}, "
            f"got {hv.shape}"
        )
    if not batched:
        fg, hv, type_map = fg[None], hv[None], type_map[None] if type_map.ndim == 2 else type_map
    n, h, w = fg.shape
    if h < 1 or w < 1:
        raise InputError(f"fg: expected a non-empty tile, got shape {fg.shape}")
    if hv.shape[1] != 2:
        raise InputError(
            f"hv: expected 2 channels (horizontal, vertical) on axis {hv.ndim - 3}, got {hv.shape}"
        )
    if hv.shape != (n, 2, h, w):
        raise InputError(f"hv: expected shape {(n, 2, h, w) if batched else (2, h, w)}, got {hv.shape}")
    if type_map.shape != (n, h, w):
        raise InputError(f"type_map: expected shape {(n, h, w) if batched else (h, w)}, got {type_map.shape}")
    if hv.dtype not in (np.float16, np.float32, np.float64):
        raise InputError(f"hv: expected dtype float16 or float32, got {hv.dtype}")
    if type_map.dtype != np.uint8:
        if not np.issubdtype(type_map.dtype, np.integer):
            raise InputError(
                f"type_map: expected dtype uint8 (argmax of the type softmax), got {type_map.dtype}"
            )
        if type_map.size and (int(type_map.min()) < 0 or int(type_map.max()) > 255):
            raise InputError("type_map: class ids must be in 0..255")
        type_map = type_map.astype(np.uint8)
    hv_range = None
    if hv.dtype == np.float16:
        hv = np.ascontiguousarray(hv)
        bad, hv_range = half_extremes(hv)
        if bad:
            raise InputError(f"hv: {bad} NaN or infinite values; expected finite numbers")
    else:
        hv = np.ascontiguousarray(hv, dtype=np.float32)
        _check_finite("hv", hv)
    fg01 = np.ascontiguousarray(_foreground(fg, fg_threshold))
    return Batch(fg01, hv, np.ascontiguousarray(type_map), batched, hv_range)
