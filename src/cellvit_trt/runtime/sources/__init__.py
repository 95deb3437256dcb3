"""Pixel sources for the runtime. Import cost is light: readers (OpenSlide, tiffslide) load when used.

with open_source(path, target_mpp=0.25, mpp=None) as src:   # slide, plain image or TIFF
    for tile in src.tiles(): ...                            # see base.py for the interface
ArraySource(array, mpp=None, target_mpp=0.25)               # numpy input
expand_inputs(path) -> list[Path]                           # a file, or the images of a folder
PushSource(height, width, mpp=...)                          # scanner push API (push.py)
"""

from __future__ import annotations

from pathlib import Path

from cellvit_trt.errors import InputError
from cellvit_trt.runtime.sources.base import Source, SourceInfo, Tile
from cellvit_trt.runtime.sources.image import IMAGE_SUFFIXES, ArraySource, ImageSource, folder_images
from cellvit_trt.runtime.sources.push import PushSource
from cellvit_trt.runtime.tiling import TILE_OVERLAP, TILE_SIZE

SLIDE_SUFFIXES = (".svs", ".ndpi", ".mrxs", ".scn", ".vms", ".vmu", ".bif", ".svslide", ".dcm", ".qptiff")
# a TIFF larger than this (or with a pyramid) is read region by region instead of decoded whole
FLAT_TIFF_MAX_PIXELS = 64 * 1024 * 1024

__all__ = [
    "ArraySource",
    "ImageSource",
    "PushSource",
    "SlideSource",
    "Source",
    "SourceInfo",
    "Tile",
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
) -> Source:
    """Open one input file as a Source (slides region by region, plain images in memory)."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such file")
    suffix = path.suffix.lower()
    slide = suffix in SLIDE_SUFFIXES or path.is_dir() or reader != "auto"
    if suffix in (".tif", ".tiff") and not slide:
        slide = _tiff_is_slide(path)
    if slide:
        from cellvit_trt.runtime.sources.slide import SlideSource

        return SlideSource(path, target_mpp, mpp, reader, tile_size, overlap)
    if suffix in IMAGE_SUFFIXES:
        return ImageSource(path, mpp, target_mpp, tile_size, overlap)
    raise InputError(
        f"{path}: unknown input type {suffix or '(no suffix)'}; expected a slide "
        f"({', '.join(SLIDE_SUFFIXES)}, "
        f"tiff) or an image ({', '.join(IMAGE_SUFFIXES)})"
    )


def expand_inputs(path: str | Path) -> list[Path]:
    """A file stays itself; a folder becomes its image files (sorted); a DICOM folder stays whole."""
    path = Path(path)
    if path.is_dir() and not any(path.glob("*.dcm")):
        return folder_images(path)
    if not path.exists():
        raise InputError(f"{path}: no such file or folder")
    return [path]
