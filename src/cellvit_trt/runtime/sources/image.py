"""In-memory sources: numpy arrays and plain images (PNG, JPEG, BMP, WebP, flat TIFF).

    ArraySource(array, mpp=None, target_mpp=0.25, name="array")   # uint8 [H, W, 3] RGB (or [H, W] / RGBA)
    ImageSource(path, mpp=None, target_mpp=0.25, max_pixels=2**28) # Pillow (tifffile for odd TIFFs)

An image with a known mpp that misses the target by more than the tolerance is resampled once, whole, with
PIL LANCZOS; without an mpp it is taken to be at the target mpp (logged). Cells are reported in the pixels of
the original image.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import numpy as np

from cellvit_trt.errors import InputError
from cellvit_trt.runtime.sources.base import Source, SourceInfo
from cellvit_trt.runtime.sources.detect import detect
from cellvit_trt.runtime.sources.pixels import DEFAULT_MAX_PIXELS, to_rgb8
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


def _check_pixels(path: Path, width: int, height: int, max_pixels: int) -> None:
    if width * height > max_pixels:
        raise InputError(
            f"{path}: the image declares {width}x{height} = {width * height} pixels, more than --max-pixels "
            f"{max_pixels} for images decoded whole (a PNG/JPEG bomb, or a huge image: convert it to a tiled "
            "pyramidal TIFF, or raise --max-pixels)"
        )


def _pillow_array(im) -> tuple[np.ndarray, bool, int | None]:
    """(array, is CMYK, maximum sample value) of a Pillow image, palette and odd modes expanded."""
    mode = im.mode
    if mode in ("P", "PA"):
        im = im.convert("RGBA" if mode == "PA" or "transparency" in im.info else "RGB")
    elif mode == "1":
        im = im.convert("L")
    elif mode not in ("L", "LA", "RGB", "RGBA", "CMYK", "I", "F") and not mode.startswith("I;16"):
        im = im.convert("RGB")  # YCbCr, LAB, HSV, RGBX, RGBa, La: defined conversions
    a = np.asarray(im)
    if mode.startswith("I;16") or (mode == "I" and a.size and a.min() >= 0 and a.max() <= 65535):
        a = a.astype(np.uint16)
    max_value = None
    tags = getattr(im, "tag_v2", None)
    if tags is not None and a.dtype == np.uint16 and tags.get(281):  # TIFF MaxSampleValue
        top = tags.get(281)
        max_value = int(top[0] if isinstance(top, tuple) else top)
    return a, mode == "CMYK", max_value


def _tifffile_array(path: Path, max_pixels: int) -> tuple[np.ndarray, bool, int | None]:
    """TIFFs Pillow does not decode (16-bit RGB, some compressions), through tifffile/imagecodecs."""
    import tifffile

    with tifffile.TiffFile(path) as tf:
        page = tf.pages[0]
        _check_pixels(path, int(page.imagewidth), int(page.imagelength), max_pixels)
        top = page.tags.get("MaxSampleValue")
        max_value = int(np.max(top.value)) if top is not None and page.dtype == np.uint16 else None
        cmyk = page.photometric == tifffile.PHOTOMETRIC.SEPARATED
        return page.asarray(), cmyk, max_value


def read_image(path: Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[np.ndarray, str, list[str]]:
    """Decode a plain image file to uint8 RGB: (pixels, decoder, notes on conversions).

    The header is read first and an image declaring more than `max_pixels` pixels is refused before any
    decoding (Pillow's process-wide bomb guard is raised to it where lower, never lowered). Pillow decodes
    PNG, JPEG, BMP, WebP and most TIFFs and raises on truncated data; TIFFs it cannot decode go through
    tifffile. Modes are converted by `pixels.to_rgb8` (gray, 16-bit, palette, RGBA, CMYK) or refused (float,
    signed)."""
    from PIL import Image

    # Pillow's bomb guard is one process-wide value: raise it to our limit where it is lower (so it never
    # refuses what --max-pixels allows), never lower it (other Pillow users in this process, e.g. `serve`'s
    # tiles, would inherit a small run limit); `_check_pixels` enforces max_pixels from the header
    if Image.MAX_IMAGE_PIXELS is not None and Image.MAX_IMAGE_PIXELS < max_pixels:
        Image.MAX_IMAGE_PIXELS = max_pixels
    reader, failure = "pillow", None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                _check_pixels(path, im.size[0], im.size[1], max_pixels)
                array, cmyk, max_value = _pillow_array(im)
    except InputError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise InputError(
            f"{path}: the image declares more pixels than --max-pixels {max_pixels} allows for images "
            f"decoded whole ({exc})"
        ) from exc
    except (OSError, ValueError, SyntaxError) as exc:
        failure = exc
    if failure is not None:
        if detect(path).format != "tiff":
            raise InputError(
                f"{path}: cannot decode the image ({type(failure).__name__}: {failure})"
            ) from failure
        try:
            array, cmyk, max_value = _tifffile_array(path, max_pixels)
        except InputError:
            raise
        except Exception as exc:  # tifffile and imagecodecs raise many types for damaged data
            raise InputError(f"{path}: cannot decode the image ({type(exc).__name__}: {exc})") from exc
        reader = "tifffile"
    rgb, note = to_rgb8(array, str(path), cmyk=cmyk, max_value=max_value)
    return rgb, reader, [note] if note else []


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
        max_pixels: int = DEFAULT_MAX_PIXELS,
    ) -> None:
        path = Path(path)
        if not path.is_file():
            raise InputError(f"{path}: no such image file")
        image, reader, notes = read_image(path, max_pixels)
        super().__init__(
            image,
            mpp if mpp is not None else _tiff_mpp(path),
            target_mpp,
            str(path),
            tile_size,
            overlap,
            reader,
        )
        self.warnings.extend(f"{path}: {n}" for n in notes)
