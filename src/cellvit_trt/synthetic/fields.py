"""Random fields defined in global pixel coordinates, so any window of a virtual slide renders identically.

Every random draw comes from a generator keyed by (seed, stream, block row, block col). A window therefore
sees exactly the values a larger window would see at the same pixels, which is what lets a slide be written
block by block without seams, and a tile be a window of the same virtual slide.
"""

from __future__ import annotations

import numpy as np

# Offsets keep block indices non-negative for SeedSequence (halos reach into negative coordinates).
_INDEX_OFFSET = 1 << 24
NOISE_BLOCK = 128  # pixels per side of one white-noise block
LATTICE_BLOCK = 16  # lattice nodes per side drawn by one generator


def block_rng(seed: int, stream: int, by: int, bx: int) -> np.random.Generator:
    """The generator that owns block (by, bx) of `stream`; independent across streams and blocks."""
    return np.random.Generator(
        np.random.PCG64(
            np.random.SeedSequence([int(seed), int(stream), by + _INDEX_OFFSET, bx + _INDEX_OFFSET])
        )
    )


def white_noise(seed: int, stream: int, y0: int, x0: int, h: int, w: int) -> np.ndarray:
    """float32 [h, w] white noise (uniform, zero mean, unit variance) of the window at global (y0, x0).

    Uniform rather than normal because it is three times cheaper to draw; it is blurred or added to pixel
    values, where the difference does not show.
    """
    out = np.empty((h, w), np.float32)
    b = NOISE_BLOCK
    for by in range(y0 // b, (y0 + h - 1) // b + 1):
        for bx in range(x0 // b, (x0 + w - 1) // b + 1):
            block = block_rng(seed, stream, by, bx).random((b, b), dtype=np.float32)
            ys, ye = max(y0, by * b), min(y0 + h, (by + 1) * b)
            xs, xe = max(x0, bx * b), min(x0 + w, (bx + 1) * b)
            out[ys - y0 : ye - y0, xs - x0 : xe - x0] = block[
                ys - by * b : ye - by * b, xs - bx * b : xe - bx * b
            ]
    out -= np.float32(0.5)
    out *= np.float32(np.sqrt(12.0))
    return out


def _bspline_weights(t: np.ndarray) -> np.ndarray:
    """Cubic B-spline weights [len(t), 4] for fractional positions t in [0, 1)."""
    t2, t3 = t * t, t * t * t
    return np.stack(
        [(1 - t) ** 3 / 6, (3 * t3 - 6 * t2 + 4) / 6, (-3 * t3 + 3 * t2 + 3 * t + 1) / 6, t3 / 6], axis=-1
    )


def _bspline_std() -> float:
    # A B-spline of i.i.d. N(0,1) nodes has variance (mean over t of sum w_i(t)^2)^2 in 2-D; dividing by
    # its square root gives a field whose marginal is close to N(0,1), so thresholds can be set by quantile.
    t = (np.arange(4096) + 0.5) / 4096
    s = float((_bspline_weights(t) ** 2).sum(axis=1).mean())
    return s


_FIELD_STD = _bspline_std()


def _lattice(seed: int, stream: int, ny0: int, nx0: int, ny: int, nx: int) -> np.ndarray:
    """Lattice node values [ny, nx] for nodes (ny0.., nx0..), each node owned by one lattice block."""
    out = np.empty((ny, nx), np.float64)
    b = LATTICE_BLOCK
    for by in range(ny0 // b, (ny0 + ny - 1) // b + 1):
        for bx in range(nx0 // b, (nx0 + nx - 1) // b + 1):
            block = block_rng(seed, stream + 7919, by, bx).standard_normal((b, b))
            ys, ye = max(ny0, by * b), min(ny0 + ny, (by + 1) * b)
            xs, xe = max(nx0, bx * b), min(nx0 + nx, (bx + 1) * b)
            out[ys - ny0 : ye - ny0, xs - nx0 : xe - nx0] = block[
                ys - by * b : ye - by * b, xs - bx * b : xe - bx * b
            ]
    return out


def _axis_matrix(coords: np.ndarray, spacing: float) -> tuple[int, np.ndarray]:
    """Interpolation matrix [len(coords), n_nodes] along one axis and the index of its first node."""
    u = (coords.astype(np.float64) + 0.5) / spacing
    i = np.floor(u).astype(np.int64)
    w = _bspline_weights(u - i)
    n0 = int(i.min()) - 1
    n = int(i.max()) - n0 + 3
    m = np.zeros((coords.size, n), np.float64)
    rows = np.arange(coords.size)
    for k in range(4):
        m[rows, i - 1 + k - n0] = w[:, k]
    return n0, m


def _axis_taps(coords: np.ndarray, spacing: float) -> tuple[int, int, np.ndarray, np.ndarray]:
    """(first node, node count, node index [len, 4] from the first, weights [len, 4]) along one axis."""
    u = (coords.astype(np.float64) + 0.5) / spacing
    i = np.floor(u).astype(np.int64)
    w = _bspline_weights(u - i).astype(np.float32)
    n0 = int(i.min()) - 1
    idx = (i - 1 - n0)[:, None] + np.arange(4)[None, :]
    return n0, int(i.max()) - n0 + 3, idx, w


def smooth_field(seed: int, stream: int, y0: int, x0: int, h: int, w: int, spacing: float) -> np.ndarray:
    """float32 [h, w] smooth random field (lattice spacing `spacing` px), marginal close to N(0, 1).

    Separable cubic B-spline of the lattice: 4 taps per axis as multiply-adds (no BLAS call, which behaves
    badly on an oversubscribed CPU).
    """
    ny0, ny, iy, wy = _axis_taps(np.arange(y0, y0 + h), spacing)
    nx0, nx, ix, wx = _axis_taps(np.arange(x0, x0 + w), spacing)
    grid = (_lattice(seed, stream, ny0, nx0, ny, nx) / _FIELD_STD).astype(np.float32)
    rows = wy[:, 0:1] * grid[iy[:, 0]]
    for k in range(1, 4):
        rows += wy[:, k : k + 1] * grid[iy[:, k]]  # [h, nx]
    out = rows[:, ix[:, 0]] * wx[:, 0]
    for k in range(1, 4):
        out += rows[:, ix[:, k]] * wx[:, k]
    return out


def smooth_field_at(seed: int, stream: int, ys: np.ndarray, xs: np.ndarray, spacing: float) -> np.ndarray:
    """The same field as `smooth_field`, evaluated at scattered pixel positions (float64 [N])."""
    ys = np.asarray(ys, np.float64)
    xs = np.asarray(xs, np.float64)
    if ys.size == 0:
        return np.zeros(0, np.float64)
    ny0, my = _axis_matrix(ys, spacing)
    nx0, mx = _axis_matrix(xs, spacing)
    grid = _lattice(seed, stream, ny0, nx0, my.shape[1], mx.shape[1])
    return ((my @ grid) * mx).sum(axis=1) / _FIELD_STD
