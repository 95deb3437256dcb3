"""What an input file is, from its content first and its suffix second.

    detect(path) -> Detected(kind, format)      # kind: "slide", "tiff", "image" or None (not an input)

- OpenSlide's own `detect_format` (when the `slides` extra is installed) names every vendor format it opens
  (aperio, hamamatsu, mirax, leica, philips, sakura, ventana, zeiss, dicom, ...), whatever the suffix.
- Magic bytes: TIFF/BigTIFF (both byte orders; tiffslide opens these: SVS, NDPI, OME-TIFF, pyramidal TIFF),
  DICOM, Zeiss CZI, PNG, JPEG, BMP, WebP.
- A file whose content is not recognised but whose suffix names a slide or image format is still an input
  (kind from the suffix, format "unrecognised"): it fails with its own error instead of being skipped
  silently (a zero-byte `.svs` must be reported, not ignored).

`kind == "tiff"`: a TIFF that `open_source` reads region by region when it is tiled, pyramidal or large,
else decodes whole as an image.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

SLIDE_SUFFIXES = (
    ".svs",
    ".ndpi",
    ".mrxs",
    ".scn",
    ".vms",
    ".vmu",
    ".bif",
    ".svslide",
    ".dcm",
    ".qptiff",
    ".czi",
)
TIFF_SUFFIXES = (".tif", ".tiff", ".btf", ".tf8", ".ome.tif", ".ome.tiff")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")

_MAGIC = (
    (b"II*\0", "tiff"),
    (b"MM\0*", "tiff"),
    (b"II+\0", "tiff"),  # BigTIFF
    (b"MM\0+", "tiff"),
    (b"\x89PNG\r\n\x1a\n", "png"),
    (b"\xff\xd8\xff", "jpeg"),
    (b"BM", "bmp"),
    (b"ZISRAWFILE", "zeiss"),
)


@dataclasses.dataclass(frozen=True)
class Detected:
    kind: str | None  # "slide" (region reads), "tiff" (slide or image, decided on opening), "image", None
    format: str  # openslide vendor, "tiff", "png", "jpeg", "bmp", "webp", "dicom", "unrecognised", ...
    by: str = "content"  # "content" or "suffix"


def _openslide_vendor(path: Path) -> str | None:
    try:
        import openslide
    except ImportError:  # the slides extra is optional; magic bytes still recognise TIFF-based slides
        return None
    try:
        return openslide.OpenSlide.detect_format(str(path))
    except Exception:  # detect_format reads the header; an unreadable file is simply not recognised
        return None


def magic_format(head: bytes) -> str | None:
    for magic, name in _MAGIC:
        if head.startswith(magic):
            return name
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    if head[128:132] == b"DICM":
        return "dicom"
    return None


def suffix_of(path: Path) -> str:
    """The format suffix, lower case: `.ome.tiff` counts as one suffix."""
    name = path.name.lower()
    for double in (".ome.tif", ".ome.tiff"):
        if name.endswith(double):
            return double
    return path.suffix.lower()


def detect(path: str | Path) -> Detected:
    path = Path(path)
    if path.is_dir():
        dicom = any(p.suffix.lower() == ".dcm" for p in path.iterdir())
        return Detected("slide", "dicom") if dicom else Detected(None, "folder")
    vendor = _openslide_vendor(path)
    if vendor is not None and vendor != "generic-tiff":
        return Detected("slide", vendor)
    try:
        with open(path, "rb") as fh:
            head = fh.read(132)
    except OSError:
        head = b""
    magic = magic_format(head)
    if magic == "tiff":
        return Detected("slide" if suffix_of(path) in SLIDE_SUFFIXES else "tiff", vendor or "tiff")
    if magic in ("dicom", "zeiss"):
        return Detected("slide", magic)
    if magic is not None:
        return Detected("image", magic)
    suffix = suffix_of(path)
    if suffix in SLIDE_SUFFIXES:
        return Detected("slide", "unrecognised", "suffix")
    if suffix in TIFF_SUFFIXES:
        return Detected("tiff", "unrecognised", "suffix")
    if suffix in IMAGE_SUFFIXES:
        return Detected("image", "unrecognised", "suffix")
    return Detected(None, "unrecognised")
