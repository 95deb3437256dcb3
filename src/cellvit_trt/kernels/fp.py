"""Floating-point primitives shared by the exact kernels: fused multiply-adds with one rounding, OpenCV's
BORDER_REFLECT_101 index, and the scale/shift `cv2.normalize(NORM_MINMAX, CV_32F)` derives.

OpenCV's AVX2/AVX-512 builds evaluate `convertTo(dst, CV_32F, scale, shift)` as one fused multiply-add per
element (float32 for a float32 source, float64 then a cast for a float64 source); `normalize_params` is
`cv::normalize`'s own arithmetic for (scale, shift). `kernels.replicas` checks all of it against OpenCV.
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic

__all__ = [
    "fma64",
    "fma32",
    "min64",
    "max64",
    "min32",
    "max32",
    "reflect101",
    "normalize_params",
    "split_index",
    "DBL_EPSILON",
]

DBL_EPSILON = float(np.finfo(np.float64).eps)


def _fma(ir_type, nb_type, name):
    """An llvm.fma intrinsic for one float type: a * b + c with one rounding."""

    def typer(typingctx, a, b, c):
        def codegen(context, builder, signature, args):
            fn = builder.module.declare_intrinsic(
                "llvm.fma", [ir_type], ir.FunctionType(ir_type, [ir_type] * 3)
            )
            return builder.call(fn, args)

        return nb_type(nb_type, nb_type, nb_type), codegen

    typer.__name__ = typer.__qualname__ = name
    return typer


fma64 = intrinsic(_fma(ir.DoubleType(), types.float64, "fma64"))
fma64.__doc__ = "a * b + c in float64 with one rounding (llvm.fma.f64)."
fma32 = intrinsic(_fma(ir.FloatType(), types.float32, "fma32"))
fma32.__doc__ = "a * b + c in float32 with one rounding (llvm.fma.f32)."


def _minmax(llvm_name, ir_type, nb_type, name):
    """llvm.minnum / llvm.maxnum on one float type: min / max of two finite values. Unlike Python's min
    (NaN branches), a running reduction of it vectorises (4x faster over a row of the Sobel output)."""

    def typer(typingctx, a, b):
        def codegen(context, builder, signature, args):
            fn = builder.module.declare_intrinsic(
                llvm_name, [ir_type], ir.FunctionType(ir_type, [ir_type] * 2)
            )
            return builder.call(fn, args)

        return nb_type(nb_type, nb_type), codegen

    typer.__name__ = typer.__qualname__ = name
    return typer


min64 = intrinsic(_minmax("llvm.minnum", ir.DoubleType(), types.float64, "min64"))
min64.__doc__ = "min(a, b) of finite float64 values (llvm.minnum.f64; a zero's sign is either operand's)."
max64 = intrinsic(_minmax("llvm.maxnum", ir.DoubleType(), types.float64, "max64"))
max64.__doc__ = "max(a, b) of finite float64 values (llvm.maxnum.f64; a zero's sign is either operand's)."
min32 = intrinsic(_minmax("llvm.minnum", ir.FloatType(), types.float32, "min32"))
min32.__doc__ = "min(a, b) of finite float32 values (llvm.minnum.f32; a zero's sign is either operand's)."
max32 = intrinsic(_minmax("llvm.maxnum", ir.FloatType(), types.float32, "max32"))
max32.__doc__ = "max(a, b) of finite float32 values (llvm.maxnum.f32; a zero's sign is either operand's)."


@njit(nogil=True, cache=True, inline="always")
def reflect101(p: int, n: int) -> int:
    """OpenCV BORDER_REFLECT_101 (gfedcb|abcdefgh|gfedcba) for any offset, repeated bounces included."""
    if n == 1:
        return 0
    while p < 0 or p >= n:
        if p < 0:
            p = -p
        else:
            p = 2 * n - 2 - p
    return p


@njit(nogil=True, cache=True)
def normalize_params(smin: float, smax: float) -> tuple[float, float]:
    """(scale, shift) of cv::normalize(src, dst, 0, 1, NORM_MINMAX, CV_32F) for source extremes smin, smax.

    OpenCV: scale = (dmax - dmin) * (smax - smin > DBL_EPSILON ? 1/(smax - smin) : 0), then for a CV_32F
    result scale = (float)scale and shift = (float)dmin - (float)(smin * scale) in float arithmetic.
    """
    scale = 1.0 / (smax - smin) if smax - smin > DBL_EPSILON else 0.0
    scale = np.float64(np.float32(scale))
    shift = np.float64(np.float32(0.0) - np.float32(smin * scale))
    return scale, shift


@njit(nogil=True, cache=True, inline="always")
def split_index(p: int, w: int, inv_w: float) -> tuple[int, int]:
    """(p // w, p % w) for 0 <= p < 2**40 without an integer division (slow in hot loops): the float
    quotient is off by at most one, which the two checks correct. inv_w = 1.0 / w."""
    r = np.int64(p * inv_w)
    if r * w > p:
        r -= 1
    elif (r + 1) * w <= p:
        r += 1
    return r, p - r * w
