"""Small data tiles laid out k x k in one model tile, and the output maps cut back per data tile."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

WHITE = 255  # filler, as the runtime pads with white


def layouts(n: int, k: int) -> list[list[int]]:
    per = k * k
    return [list(range(s, min(s + per, n))) for s in range(0, n, per)]


def mosaic(images: Sequence[np.ndarray], k: int, t: int) -> np.ndarray:
    out = np.full((k * t, k * t, 3), WHITE, np.uint8)
    for j, im in enumerate(images):
        r, c = divmod(j, k)
        out[r * t : (r + 1) * t, c * t : (c + 1) * t] = im
    return out


def cut(maps: dict[str, np.ndarray], b: int, j: int, k: int, t: int) -> dict[str, np.ndarray]:
    r, c = divmod(j, k)
    ys, xs = slice(r * t, (r + 1) * t), slice(c * t, (c + 1) * t)
    return {
        "fg": np.ascontiguousarray(maps["fg"][b, ys, xs]),
        "hv": np.ascontiguousarray(maps["hv"][b, :, ys, xs], dtype=np.float32),
        "type_map": np.ascontiguousarray(maps["type_map"][b, ys, xs]),
    }
