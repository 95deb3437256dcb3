"""Real nucleus shapes: the annotated H&E instance masks of shared/data/real/nucls15 (NuCLS, CC0), laid out on
larger tiles. `synth_maps.maps_from_instances` turns them into network-like maps (HoVer targets, blur, noise).

The masks are 256 x 256 fields of view at about 0.25 um/px, the x40 scale the post-processor is tuned for.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

NUCLS = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "real" / "nucls15" / "inst"


def nucls_masks() -> list[np.ndarray] | None:
    """The 15 instance masks (int32, 0 = background, ids 1..n), sorted by file name; None where absent."""
    if not NUCLS.is_dir():
        return None
    from PIL import Image

    files = sorted(NUCLS.glob("*.png"))
    return [np.asarray(Image.open(f)).astype(np.int32) for f in files] or None


def _paste(inst: np.ndarray, mask: np.ndarray, r: int, c: int) -> None:
    """Copy `mask` into `inst` at (r, c) with fresh ids (clipped at the tile border)."""
    h = min(mask.shape[0], inst.shape[0] - r)
    w = min(mask.shape[1], inst.shape[1] - c)
    part = mask[:h, :w]
    offset = int(inst.max())
    inst[r : r + h, c : c + w] = np.where(part > 0, part + offset, inst[r : r + h, c : c + w])


def mosaic(masks: list[np.ndarray], rows: int, cols: int) -> np.ndarray:
    """rows x cols masks side by side (cycling through them, every other one mirrored so that repeats differ),
    relabelled 1..N: a tissue-like tile with nuclei cut at the seams as tiling cuts them."""
    mh, mw = masks[0].shape
    inst = np.zeros((rows * mh, cols * mw), np.int32)
    for k in range(rows * cols):
        m = masks[k % len(masks)]
        if (k // len(masks)) % 2:
            m = m[:, ::-1]
        _paste(inst, m, (k // cols) * mh, (k % cols) * mw)
    return _relabel(inst)


def scatter(masks: list[np.ndarray], size: tuple[int, int], places: list[tuple[int, int, int]]) -> np.ndarray:
    """Masks `places` = [(index, row, col), ...] on an empty tile of `size`, relabelled 1..N."""
    inst = np.zeros(size, np.int32)
    for k, r, c in places:
        _paste(inst, masks[k % len(masks)], r, c)
    return _relabel(inst)


def _relabel(inst: np.ndarray) -> np.ndarray:
    ids, inv = np.unique(inst, return_inverse=True)
    out = inv.reshape(inst.shape).astype(np.int32)
    return out if ids[0] == 0 else out + 1
