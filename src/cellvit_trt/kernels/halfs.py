"""float16 -> float32 conversion with a finiteness check in one pass (NumPy's astype is slow here)."""

from __future__ import annotations

import numpy as np
from numba import njit

__all__ = ["half_to_float"]


@njit(nogil=True, cache=True)
def _convert(bits: np.ndarray, out: np.ndarray) -> int:
    """Exact IEEE half -> single; returns the number of inf/NaN inputs."""
    bad = 0
    n = bits.shape[0]
    out_bits = out.view(np.uint32)
    for i in range(n):
        h = np.uint32(bits[i])
        sign = (h & np.uint32(0x8000)) << np.uint32(16)
        exp = (h >> np.uint32(10)) & np.uint32(0x1F)
        mant = h & np.uint32(0x3FF)
        if exp == 0:
            # zero or subnormal: mant * 2**-24, exact in float32
            out[i] = np.float32(mant) * np.float32(5.960464477539063e-08)
            out_bits[i] |= sign
        elif exp == 31:
            bad += 1
            out_bits[i] = sign | np.uint32(0x7F800000) | (mant << np.uint32(13))
        else:
            out_bits[i] = sign | ((exp + np.uint32(112)) << np.uint32(23)) | (mant << np.uint32(13))
    return bad


def half_to_float(arr: np.ndarray, out: np.ndarray | None = None) -> tuple[np.ndarray, int]:
    """(float32 copy of a float16 array, count of inf/NaN values); written into `out` when it is a
    C-contiguous float32 array of that shape."""
    src = np.ascontiguousarray(arr)
    if out is None or out.shape != src.shape or out.dtype != np.float32 or not out.flags.c_contiguous:
        out = np.empty(src.shape, np.float32)
    bad = _convert(src.reshape(-1).view(np.uint16), out.reshape(-1))
    return out, int(bad)
