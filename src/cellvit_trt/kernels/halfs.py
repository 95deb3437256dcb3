"""float16 -> float32 conversion with a finiteness check in one pass (NumPy's astype is slow here)."""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic

__all__ = ["half_to_float"]


def _half_bits_to_float(typingctx, bits):
    """IEEE half (given as its uint16 bits) -> float32, exactly (LLVM `fpext half`; vectorises to F16C)."""

    def codegen(context, builder, signature, args):
        half = builder.bitcast(args[0], ir.HalfType())
        return builder.fpext(half, ir.FloatType())

    return types.float32(types.uint16), codegen


half_bits_to_float = intrinsic(_half_bits_to_float)


@njit(nogil=True, cache=True)
def _convert(bits: np.ndarray, out: np.ndarray) -> int:
    """Exact IEEE half -> single; returns the number of inf/NaN inputs."""
    bad = 0
    for i in range(bits.shape[0]):
        h = bits[i]
        out[i] = half_bits_to_float(h)
        bad += (h & np.uint16(0x7C00)) == np.uint16(0x7C00)
    return bad


def half_to_float(arr: np.ndarray, out: np.ndarray | None = None) -> tuple[np.ndarray, int]:
    """(float32 copy of a float16 array, count of inf/NaN values); written into `out` when it is a
    C-contiguous float32 array of that shape."""
    src = np.ascontiguousarray(arr)
    if out is None or out.shape != src.shape or out.dtype != np.float32 or not out.flags.c_contiguous:
        out = np.empty(src.shape, np.float32)
    bad = _convert(src.reshape(-1).view(np.uint16), out.reshape(-1))
    return out, int(bad)
