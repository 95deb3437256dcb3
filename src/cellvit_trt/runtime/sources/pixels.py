"""Decoded pixels of any layout -> uint8 RGB, where the conversion is defined; refused where it is not.

    rgb, note = to_rgb8(array, name, cmyk=False, max_value=None)   # note: what was converted, or None

| input | result |
|---|---|
| uint8 RGB | as is |
| RGBA / gray + alpha | composited over white (transparent = outside the scanned area) |
| gray (uint8, bool) | repeated to RGB, noted: CellViT expects colour H&E (few or no cells) |
| uint16 (gray or RGB[A]) | scaled by 255 / max_value (format's maximum, e.g. TIFF MaxSampleValue; 65535) |
| CMYK (`cmyk=True`) | RGB = (255 - C)(255 - K) / 255 per channel |
| float, signed, > 4 channels | refused: no defined mapping to 8-bit RGB |

Palette images are expanded by the decoder (Pillow) before they get here.
"""

from __future__ import annotations

import numpy as np

from cellvit_trt.errors import InputError

DEFAULT_MAX_PIXELS = 1 << 28  # images decoded whole (PNG, JPEG, flat TIFF): 16384 x 16384, 0.8 GB as RGB
DEFAULT_MAX_SLIDE_PIXELS = 1 << 36  # slides read region by region (level 0): e.g. 262144 x 262144
GRAY_NOTE = "grayscale image converted to RGB (R = G = B); CellViT expects colour H&E, expect few or no cells"


def _over_white(rgb: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    a = alpha.astype(np.uint16)[..., None]
    return ((rgb.astype(np.uint16) * a + 255 * (255 - a) + 127) // 255).astype(np.uint8)


def _scale16(a: np.ndarray, max_value: int | None) -> np.ndarray:
    top = int(max_value) if max_value else 65535
    if top <= 0:
        raise InputError(f"maximum sample value {top}: expected > 0")
    wide = np.minimum(a.astype(np.uint32), top)
    return ((wide * 255 + top // 2) // top).astype(np.uint8)


def to_rgb8(
    array: np.ndarray, name: str, cmyk: bool = False, max_value: int | None = None
) -> tuple[np.ndarray, str | None]:
    a = np.asarray(array)
    notes = []
    if a.dtype == bool:
        a = a.astype(np.uint8) * 255
    if a.dtype == np.uint16:
        a = _scale16(a, max_value)
        notes.append(f"16-bit samples scaled to 8 bits (maximum {max_value or 65535})")
    elif a.dtype != np.uint8:
        raise InputError(
            f"{name}: {a.dtype} samples have no defined mapping to 8-bit RGB; expected an 8- or 16-bit "
            "RGB (H&E) image"
        )
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[..., 0]
    if a.ndim == 2 or (a.ndim == 3 and a.shape[2] == 2):
        gray = a if a.ndim == 2 else _over_white(np.repeat(a[..., :1], 3, axis=2), a[..., 1])[..., 0]
        notes.append(GRAY_NOTE)
        return np.ascontiguousarray(np.repeat(gray[..., None], 3, axis=2)), "; ".join(notes)
    if a.ndim != 3 or a.shape[2] not in (3, 4) or 0 in a.shape:
        raise InputError(f"{name}: expected an image [H, W, 3] (RGB), got shape {list(a.shape)}")
    if a.shape[2] == 4 and cmyk:
        k = 255 - a[..., 3:4].astype(np.uint16)
        a = ((255 - a[..., :3].astype(np.uint16)) * k // 255).astype(np.uint8)
        notes.append("CMYK converted to RGB")
    elif a.shape[2] == 4:
        a = _over_white(a[..., :3], a[..., 3])
    return np.ascontiguousarray(a[..., :3]), "; ".join(notes) or None
