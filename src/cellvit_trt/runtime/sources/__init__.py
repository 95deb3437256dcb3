"""Pixel sources for the runtime. Import cost is light: readers (OpenSlide, tiffslide) load when used.

with open_source(path, target_mpp=0.25, mpp=None) as src:   # slide, plain image or TIFF
    for tile in src.tiles(): ...                            # see base.py for the interface
ArraySource(array, mpp=None, target_mpp=0.25)               # numpy input
detect(path) -> Detected(kind, format)                      # what a file is, by content (detect.py)
PushSource(height, width, mpp=...)                          # scanner push API (push.py)
"""

from __future__ import annotations

from pathlib import Path

from cellvit_trt.errors import InputError
from cellvit_trt.runtime.sources.base import Source, SourceInfo, Tile
from cellvit_trt.runtime.sources.detect import IMAGE_SUFFIXES, SLIDE_SUFFIXES, Detected, detect
from cellvit_trt.runtime.sources.image import ArraySource, ImageSource
from cellvit_trt.runtime.sources.pixels import DEFAULT_MAX_PIXELS, DEFAULT_MAX_SLIDE_PIXELS
from cellvit_trt.runtime.sources.push import PushSource
from cellvit_trt.runtime.tiling import TILE_OVERLAP, TILE_SIZE

# a TIFF larger than this (or with a pyramid) is read region by region instead of decoded whole
FLAT_TIFF_MAX_PIXELS = 64 * 1024 * 1024

__all__ = [
    "IMAGE_SUFFIXES",
    "SLIDE_SUFFIXES",
    "ArraySource",
    "Detected",
    "ImageSource",
    "PushSource",
    "SlideSource",
    "Source",
    "SourceInfo",
    "Tile",
    "detect",
    "expand_inputs",
    "open_source",
]


def __getattr__(name: str):
    if name == "SlideSource":
        from cellvit_trt.runtime.sources.slide import SlideSource

        return SlideSource
    raise AttributeError(name)


def _tiff_is_slide(path: Path) -> bool:
    import tifffile

    try:
        with tifffile.TiffFile(path) as tf:
            series = tf.series[0]
            h, w = series.shape[0], series.shape[1]
            return len(series.levels) > 1 or tf.is_ome or tf.pages[0].is_tiled or h * w > FLAT_TIFF_MAX_PIXELS
    except (tifffile.TiffFileError, OSError, ValueError, IndexError) as exc:
        raise InputError(f"{path}: not a readable TIFF ({exc})") from exc


def open_source(
    path: str | Path,
    target_mpp: float = 0.25,
    mpp: float | None = None,
    tile_size: int = TILE_SIZE,
    overlap: int = TILE_OVERLAP,
    reader: str = "auto",
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_slide_pixels: int = DEFAULT_MAX_SLIDE_PIXELS,
) -> Source:
    """Open one input file as a Source (slides region by region, plain images in memory). Images decoded
    whole are bounded by `max_pixels`, slides by `max_slide_pixels` at level 0 (sources.pixels defaults).

    The kind comes from the file's content (`detect`), not its suffix: a PNG named `.svs` is an image, an
    SVS named `.tif` a slide."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such file")
    found = detect(path)
    slide = found.kind == "slide" or reader != "auto"
    if found.kind == "tiff" and not slide:
        slide = _tiff_is_slide(path)
    if slide:
        from cellvit_trt.runtime.sources.slide import SlideSource

        return SlideSource(path, target_mpp, mpp, reader, tile_size, overlap, max_slide_pixels)
    if found.kind in ("image", "tiff"):
        return ImageSource(path, mpp, target_mpp, tile_size, overlap, max_pixels)
    raise InputError(
        f"{path}: not a slide or image this package reads (content not recognised); expected a slide "
        f"({', '.join(SLIDE_SUFFIXES)}, tiff; any format OpenSlide or tiffslide opens) or an image "
        f"({', '.join(IMAGE_SUFFIXES)})"
    )


def expand_inputs(path: str | Path) -> list[Path]:
    """A file stays itself; a folder becomes the slides and images in it (recognised by content, sorted);
    a DICOM folder stays whole. Several inputs, globs and manifests: `cellvit_trt.runtime.inputs`."""
    from cellvit_trt.runtime.inputs import expand_specs

    entries = expand_specs([path]).entries
    for e in entries:
        if e.error is not None:
            raise InputError(e.error)
    return [e.path for e in entries]
