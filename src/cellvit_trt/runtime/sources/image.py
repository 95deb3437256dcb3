"""In-memory sources: numpy arrays and plain images (PNG, JPEG, BMP, WebP, flat TIFF).

    ArraySource(array, mpp=None, target_mpp=0.25, name="array")   # uint8 [H, W, 3] RGB (or [H, W] / RGBA)
    ImageSource(path, mpp=None, target_mpp=0.25)                   # OpenCV (BGR -> RGB), Pillow fallback

An image with a known mpp that misses the target by more than the tolerance is resampled once, whole, with
PIL LANCZOS; without an mpp it is taken to be at the target mpp (logged). Cells are reported in the pixels of
the original image.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from cellvit_trt.errors import InputError
from cellvit_trt.runtime.sources.base import Source, SourceInfo
from cellvit_trt.runtime.sources.resolution import choose_level
from cellvit_trt.runtime.tiling import TILE_OVERLAP, TILE_SIZE

log = logging.getLogger(__name__)


def as_rgb_uint8(array: np.ndarray, name: str) -> np.ndarray:
    """Validate and normalise an image array to uint8 [H, W, 3] RGB (grey is repeated, alpha dropped)."""
    a = np.asarray(array)
    if a.dtype != np.uint8:
        raise InputError(f"{name}: expected a uint8 image, got {a.dtype} (scale it to 0..255 first)")
    if a.ndim == 2:
        a = np.repeat(a[..., None], 3, axis=2)
    if a.ndim != 3 or a.shape[2] not in (3, 4) or a.shape[0] == 0 or a.shape[1] == 0:
        raise InputError(f"{name}: expected an image [H, W, 3] (RGB), got shape {list(a.shape)}")
    return np.ascontiguousarray(a[..., :3])


class ArraySource(Source):
    def __init__(
        self,
        array: np.ndarray,
        mpp: float | None = None,
        target_mpp: float = 0.25,
        name: str = "array",
        tile_size: int = TILE_SIZE,
        overlap: int = TILE_OVERLAP,
        reader: str = "numpy",
    ) -> None:
        image = as_rgb_uint8(array, name)
        scale, resample, out_mpp = 1.0, 1.0, mpp
        if mpp is None:
            log.info("%s: no mpp given, assuming the target %.3f mpp", name, target_mpp)
        else:
            choice = choose_level(name, mpp, [1.0], target_mpp)
            resample, out_mpp = choice.resample, choice.target_mpp
            if resample != 1.0:
                from PIL import Image

                h, w = int(image.shape[0] / resample), int(image.shape[1] / resample)
                box = (0.0, 0.0, w * resample, h * resample)
                image = np.asarray(Image.fromarray(image).resize((w, h), Image.Resampling.LANCZOS, box=box))
                scale = resample
        self._image = image
        info = SourceInfo(
            name=name,
            height=image.shape[0],
            width=image.shape[1],
            mpp=out_mpp,
            scale=scale,
            base_mpp=mpp,
            resample=resample,
            reader=reader,
        )
        super().__init__(info, tile_size, overlap)

    def _read(self, y0: int, x0: int, h: int, w: int) -> np.ndarray:
        return self._image[y0 : y0 + h, x0 : x0 + w]

    def close(self) -> None:
        self._image = np.empty((0, 0, 3), np.uint8)


def read_image(path: Path) -> tuple[np.ndarray, str]:
    """Decode a plain image file to uint8 RGB; OpenCV first, Pillow for what OpenCV refuses."""
    import cv2
    from PIL import Image

    data = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if data is not None:
        return cv2.cvtColor(data, cv2.COLOR_BGR2RGB), "opencv"
    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB")), "pillow"
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise InputError(f"{path}: cannot decode the image ({exc})") from exc


def _tiff_mpp(path: Path) -> float | None:
    """mpp from TIFF resolution tags (centimetre or inch units), None when absent."""
    if path.suffix.lower() not in (".tif", ".tiff"):
        return None
    import tifffile

    try:
        with tifffile.TiffFile(path) as tf:
            tags = tf.pages[0].tags
            res, unit = tags.get("XResolution"), tags.get("ResolutionUnit")
            if res is None or unit is None:
                return None
            num, den = res.value
            per_unit = num / den if den else 0
            um = {2: 25400.0, 3: 10000.0}.get(int(unit.value))
            return um / per_unit if um and per_unit > 0 else None
    except (tifffile.TiffFileError, OSError, ValueError, ZeroDivisionError):
        return None


class ImageSource(ArraySource):
    def __init__(
        self,
        path: str | Path,
        mpp: float | None = None,
        target_mpp: float = 0.25,
        tile_size: int = TILE_SIZE,
        overlap: int = TILE_OVERLAP,
    ) -> None:
        path = Path(path)
        if not path.is_file():
            raise InputError(f"{path}: no such image file")
        image, reader = read_image(path)
        super().__init__(
            image,
            mpp if mpp is not None else _tiff_mpp(path),
            target_mpp,
            str(path),
            tile_size,
            overlap,
            reader,
        )
