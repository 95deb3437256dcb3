"""float16 HV maps read in place: a check pass (inf/NaN count and each plane's extremes, found on the half
bits as integers: that reduction vectorises where a float one would not; the Sobel step needs the extremes
first), and `as_f32`, with which the kernels decode each half where they read it (no float32 copy)."""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic, overload

__all__ = ["half_extremes", "as_f32"]


def _half_bits_to_float(typingctx, bits):
    """IEEE half (given as its uint16 bits) -> float32, exactly (LLVM `fpext half`; vectorises to F16C)."""

    def codegen(context, builder, signature, args):
        half = builder.bitcast(args[0], ir.HalfType())
        return builder.fpext(half, ir.FloatType())

    return types.float32(types.uint16), codegen


half_bits_to_float = intrinsic(_half_bits_to_float)


@njit(nogil=True, cache=True, inline="always")
def _half_key(h):
    """The order key of a half's bits (see `_order_key_to_value`), written so that the loops vectorise."""
    s = np.int32(np.int16(h))
    return s ^ ((s >> 15) & np.int32(0x7FFF))


@njit(nogil=True, cache=True)
def _scan(bits: np.ndarray, keys: np.ndarray) -> int:
    """keys[p] = (min, max) of plane p's order keys (bits [P, n]); returns the number of inf/NaN inputs."""
    bad = 0
    for p in range(bits.shape[0]):
        src = bits[p]
        kmin = np.int32(32767)
        kmax = np.int32(-32768)
        for i in range(src.shape[0]):
            h = src[i]
            bad += (h & np.uint16(0x7C00)) == np.uint16(0x7C00)
            key = _half_key(h)
            kmin = min(kmin, key)
            kmax = max(kmax, key)
        keys[p, 0] = kmin
        keys[p, 1] = kmax
    return bad


def _order_key_to_value(key: int) -> float:
    """The half whose order key is `key`. A half's key is its bits as int16 with the magnitude bits flipped
    when negative, so keys order as the values do (-0.0 just below +0.0), inf included; the map is its own
    inverse."""
    bits = (key ^ ((key >> 15) & 0x7FFF)) & 0xFFFF
    return float(np.array([bits], np.uint16).view(np.float16)[0])


def _planes(src: np.ndarray) -> tuple[tuple[int, ...], int]:
    lead = src.shape[:-2] if src.ndim > 2 else ()
    return lead, int(np.prod(lead, dtype=np.int64))


def _extremes(keys: np.ndarray, lead: tuple[int, ...]) -> np.ndarray:
    extremes = np.array([[_order_key_to_value(int(k)) for k in pair] for pair in keys], np.float64)
    return extremes.reshape(*lead, 2)


def half_extremes(arr: np.ndarray) -> tuple[int, np.ndarray]:
    """(count of inf/NaN values, float64 [..., 2] the (min, max) of each plane of a float16 array, a plane
    being the last two axes: shape arr.shape[:-2] + (2,), or (2,) for arrays of fewer than three axes). The
    extremes mean nothing when the count is not 0."""
    src = np.ascontiguousarray(arr)
    lead, n_planes = _planes(src)
    keys = np.empty((n_planes, 2), np.int32)
    bad = _scan(src.reshape(n_planes, -1).view(np.uint16), keys)
    return int(bad), _extremes(keys, lead)


def as_f32(x):
    """x as float32 inside Numba code: a float32 unchanged, a uint16 read as the bits of an IEEE half
    (exact). Lets one kernel read HV planes given as float32 or as float16 (viewed as uint16) without a
    converted copy."""
    raise TypeError("as_f32 is for Numba code")


@overload(as_f32, inline="always")
def _as_f32(x):
    if x == types.uint16:
        return lambda x: half_bits_to_float(x)
    if x == types.float32:
        return lambda x: x
    return None
