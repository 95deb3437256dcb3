"""Whole-slide images through OpenSlide, with tiffslide as the pure-Python fallback.

    src = SlideSource(path, target_mpp=0.25, mpp=None, reader="auto", tile_size=1024, overlap=32)

- reader "auto": OpenSlide when it recognises the file (svs, ndpi, mrxs, scn, vms, bif, dicom, tiled TIFF);
  otherwise tiffslide (pyramidal TIFF with SubIFDs, OME-TIFF, strip TIFF). "openslide"/"tiffslide" force one.
- mpp: `mpp` argument > `openslide.mpp-x` / `tiffslide.mpp-x` > "MPP = x" in the description (as upstream).
  None of these: InputError naming the file (pass `mpp=` / `--mpp`).
- The region is the slide's bounds (`openslide.bounds-*`, e.g. mrxs) when present; `info.offset` holds the
  level-0 origin, so cells are reported in full level-0 slide coordinates (QuPath's frame).
- Resampling (when the level mpp misses the target by more than the tolerance, see resolution.py) uses
  PIL LANCZOS with a fractional source box, so every tile sees exactly the same global pixel grid; upstream
  also resamples with PIL LANCZOS.
"""

from __future__ import annotations

import logging
import math
import re
import threading
from pathlib import Path

import numpy as np

from cellvit_trt.errors import InputError, require
from cellvit_trt.runtime.sources.base import Source, SourceInfo
from cellvit_trt.runtime.sources.pixels import DEFAULT_MAX_SLIDE_PIXELS, to_rgb8
from cellvit_trt.runtime.sources.resolution import choose_level
from cellvit_trt.runtime.sources.tile_check import JpegTileCheck
from cellvit_trt.runtime.tiling import TILE_OVERLAP, TILE_SIZE

log = logging.getLogger(__name__)

_MPP_IN_TEXT = re.compile(r"MPP(?: =)? (\d+\.\d+)")  # upstream's regex on the description/comment
LANCZOS_SUPPORT = 3  # PIL LANCZOS kernel radius in source px (per unit of scale)
THUMB_READ_MAX_PX = (
    1 << 26
)  # level pixels read whole for a thumbnail (~64 Mpx, a few seconds); beyond: sampled
THUMB_WINDOWS, THUMB_WINDOW = 4096, 64


def _subifd_pyramid(path: Path) -> bool:
    """OME-TIFF or SubIFD pyramid: OpenSlide's generic-tiff would see level 0 only; tiffslide sees all."""
    import tifffile

    try:
        with tifffile.TiffFile(path) as tf:
            return bool(tf.is_ome or tf.pages[0].subifds)
    except (tifffile.TiffFileError, OSError, ValueError, IndexError):
        return False


def _open(path: Path, reader: str):
    if reader in ("auto", "openslide"):
        openslide = require("openslide", "slides", "reading whole-slide images")
        fmt = openslide.OpenSlide.detect_format(str(path))
        if fmt == "generic-tiff" and reader == "auto" and _subifd_pyramid(path):
            fmt = None
        if fmt is not None:
            try:
                return openslide.OpenSlide(str(path)), "openslide"
            except openslide.OpenSlideError as exc:
                raise InputError(f"{path}: OpenSlide cannot open this {fmt} slide ({exc})") from exc
        if reader == "openslide":
            raise InputError(f"{path}: not a slide format OpenSlide recognises")
    tiffslide = require("tiffslide", "slides", "reading pyramidal TIFF / OME-TIFF without OpenSlide")
    try:
        return tiffslide.TiffSlide(str(path)), "tiffslide"
    except Exception as exc:  # tifffile raises many types for non-TIFF or damaged files
        raise InputError(
            f"{path}: neither OpenSlide nor tiffslide can open it ({type(exc).__name__}: {exc})"
        ) from exc


def _slide_mpp(path: Path, props: dict, reader: str) -> float | None:
    for key in (f"{reader}.mpp-x", "openslide.mpp-x", "tiffslide.mpp-x"):
        value = props.get(key)
        if value not in (None, ""):
            try:
                mpp = float(value)
            except ValueError:
                continue
            if mpp > 0 and math.isfinite(mpp):
                return mpp
    for key in ("openslide.comment", "tiffslide.comment", "tiff.ImageDescription"):
        match = _MPP_IN_TEXT.search(str(props.get(key) or ""))
        if match:
            log.warning("%s: mpp %s read from the image description; check it", path, match.group(1))
            return float(match.group(1))
    return _tiff_file_mpp(path)


_UM_PER_UNIT = {"µm": 1.0, "um": 1.0, "micron": 1.0, "nm": 1e-3, "mm": 1e3, "cm": 1e4, "m": 1e6}


def _tiff_file_mpp(path: Path) -> float | None:
    """OME-XML PhysicalSizeX (any unit), else TIFF resolution tags in inch/centimetre; None when absent."""
    import xml.etree.ElementTree as ET

    import tifffile

    try:
        with tifffile.TiffFile(path) as tf:
            if tf.is_ome and tf.ome_metadata:
                for el in ET.fromstring(tf.ome_metadata).iter():
                    if el.tag.endswith("Pixels") and el.get("PhysicalSizeX"):
                        unit = _UM_PER_UNIT.get(el.get("PhysicalSizeXUnit", "µm"))
                        return float(el.get("PhysicalSizeX")) * unit if unit else None
            tags = tf.pages[0].tags
            res, unit = tags.get("XResolution"), tags.get("ResolutionUnit")
            if res is not None and unit is not None and int(unit.value) in (2, 3):
                num, den = res.value
                per_unit = num / den if den else 0.0
                if per_unit > 1:  # 1 px per unit is the "unset" default of many writers
                    return (25400.0 if int(unit.value) == 2 else 10000.0) / per_unit
    except (tifffile.TiffFileError, OSError, ValueError, IndexError, ET.ParseError):
        return None
    return None


class SlideSource(Source):
    def __init__(
        self,
        path: str | Path,
        target_mpp: float = 0.25,
        mpp: float | None = None,
        reader: str = "auto",
        tile_size: int = TILE_SIZE,
        overlap: int = TILE_OVERLAP,
        max_pixels: int = DEFAULT_MAX_SLIDE_PIXELS,
    ) -> None:
        path = Path(path)
        if not path.exists():
            raise InputError(f"{path}: no such slide")
        if reader not in ("auto", "openslide", "tiffslide"):
            raise InputError(f"reader: expected auto, openslide or tiffslide, got {reader!r}")
        self._slide, used = _open(path, reader)
        try:
            props = dict(self._slide.properties)
            base_mpp = mpp if mpp is not None else _slide_mpp(path, props, used)
            if base_mpp is None:
                raise InputError(
                    f"{path}: the slide has no usable resolution (no mpp-x property, no 'MPP = ' in its "
                    "description); give it explicitly (--mpp / mpp=)"
                )
            choice = choose_level(str(path), base_mpp, self._slide.level_downsamples, target_mpp)
            bx = int(props.get("openslide.bounds-x") or 0)
            by = int(props.get("openslide.bounds-y") or 0)
            w0, h0 = self._slide.dimensions
            if w0 * h0 > max_pixels:
                raise InputError(
                    f"{path}: the slide declares {w0}x{h0} = {w0 * h0} pixels at level 0, more than "
                    f"--max-slide-pixels {max_pixels}"
                )
            bw = int(props.get("openslide.bounds-width") or w0 - bx)
            bh = int(props.get("openslide.bounds-height") or h0 - by)
            if bw <= 0 or bh <= 0:
                raise InputError(
                    f"{path}: the slide stores no image data (its bounds are {bw}x{bh}: every tile is empty)"
                )
        except BaseException:
            self._slide.close()
            raise
        self._choice = choice
        self._bounds = (bx, by)
        # OpenSlide handles are thread-safe; tiffslide's are not documented to be: serialise its reads
        self._lock = threading.Lock() if used == "tiffslide" else None
        self._path, self._reopen_lock = path, threading.Lock()
        # tiffslide's JPEG decoder drops libjpeg's warnings: check its tiles with libjpeg's own reporting
        self._check = JpegTileCheck.open(path) if used == "tiffslide" else None
        d = choice.level_downsample
        lw, lh = self._slide.level_dimensions[choice.level]
        # region of the level that holds the bounds, in level px
        self._level_box = (bx / d, by / d, min(lw, bw / d), min(lh, bh / d))
        height = int(self._level_box[3] / choice.resample)
        width = int(self._level_box[2] / choice.resample)
        keep = {
            k: props[k] for k in props if k.split(".")[-1] in ("vendor", "objective-power", "mpp-x", "mpp-y")
        }
        info = SourceInfo(
            name=str(path),
            height=height,
            width=width,
            mpp=choice.target_mpp,
            scale=choice.scale,
            offset=(float(bx), float(by)),
            base_mpp=base_mpp,
            level=choice.level,
            resample=choice.resample,
            reader=used,
            properties=keep,
        )
        super().__init__(info, tile_size, overlap)
        log.info(
            "%s: %s, level %d (%.4f mpp), resample %.4f -> %.4f mpp, region %dx%d",
            path,
            used,
            choice.level,
            choice.level_mpp,
            choice.resample,
            choice.target_mpp,
            height,
            width,
        )

    def _read_level(self, lx: int, ly: int, w: int, h: int) -> np.ndarray:
        """Level px window (relative to the bounds) -> uint8 RGB."""
        d = self._choice.level_downsample
        loc = (int(round(self._bounds[0] + lx * d)), int(round(self._bounds[1] + ly * d)))
        level = self._choice.level
        if self._lock is None:
            slide = self._slide
            try:
                region = slide.read_region(loc, level, (w, h))
            except Exception:
                self._reopen(slide)  # OpenSlide stays in its error state after a failed read: start afresh
                raise
        else:
            with self._lock:
                region = self._slide.read_region(loc, level, (w, h))
                if self._check is not None:
                    self._check.window(level, int(loc[0] / d), int(loc[1] / d), w, h)
        return self._rgb(np.asarray(region))

    def _reopen(self, failed) -> None:
        """A fresh OpenSlide handle after an error, so that one corrupt tile fails only its own reads."""
        import openslide

        with self._reopen_lock:
            if self._slide is failed:
                self._slide = openslide.OpenSlide(str(self._path))
                failed.close()

    def _rgb(self, region: np.ndarray) -> np.ndarray:
        """RGBA (transparent = outside the scanned area) over white; gray or 16-bit levels converted (noted
        once in `warnings`)."""
        rgb, note = to_rgb8(region, self.info.name)
        if note and f"{self.info.name}: {note}" not in self.warnings:
            self.warnings.append(f"{self.info.name}: {note}")
        return rgb

    def _read(self, y0: int, x0: int, h: int, w: int) -> np.ndarray:
        f = self._choice.resample
        if f == 1.0:
            return self._read_level(x0, y0, w, h)
        from PIL import Image

        # target window [x0, x0+w) maps to level [x0*f, (x0+w)*f); read it plus the Lanczos support
        pad = int(math.ceil(LANCZOS_SUPPORT * max(f, 1.0))) + 1
        lw, lh = self._level_box[2], self._level_box[3]
        lx0 = max(0, int(math.floor(x0 * f)) - pad)
        ly0 = max(0, int(math.floor(y0 * f)) - pad)
        lx1 = min(int(lw), int(math.ceil((x0 + w) * f)) + pad)
        ly1 = min(int(lh), int(math.ceil((y0 + h) * f)) + pad)
        src = self._read_level(lx0, ly0, lx1 - lx0, ly1 - ly0)
        box = (x0 * f - lx0, y0 * f - ly0, (x0 + w) * f - lx0, (y0 + h) * f - ly0)
        box = (box[0], box[1], min(box[2], lx1 - lx0), min(box[3], ly1 - ly0))
        out = Image.fromarray(src).resize((w, h), Image.Resampling.LANCZOS, box=box)
        return np.asarray(out)

    def thumbnail(self, max_side: int = 2048) -> tuple[np.ndarray, float]:
        """From the coarsest pyramid level that still has >= max_side px (never the full region)."""
        import cv2

        factor = max(1.0, max(self.info.height, self.info.width) / max_side)
        th, tw = max(1, round(self.info.height / factor)), max(1, round(self.info.width / factor))
        bx, by = self._bounds
        bw, bh = (
            self._level_box[2] * self._choice.level_downsample,
            self._level_box[3] * self._choice.level_downsample,
        )
        need = factor * self.info.scale  # level-0 px per thumbnail px
        levels = [i for i, d in enumerate(self._slide.level_downsamples) if d <= need] or [0]
        level = max(levels, key=lambda i: self._slide.level_downsamples[i])
        d = float(self._slide.level_downsamples[level])
        lw, lh = int(bw / d), int(bh / d)
        if lw * lh > THUMB_READ_MAX_PX:  # no small enough level (a flat or sparse huge TIFF): sample it
            return self._sampled_thumbnail(level, d, lw, lh, th, tw), factor
        out = np.empty((th, tw, 3), np.uint8)
        step = max(1, int(((1 << 24) // max(1, lw)) * th / max(1, lh)))  # ~16 Mpx of level pixels per strip
        y = 0
        while y < th:
            y2 = min(th, y + step)
            r0, r1 = int(y * lh / th), max(int(y * lh / th) + 1, min(lh, int(round(y2 * lh / th))))
            loc = (int(round(bx)), int(round(by + r0 * d)))
            try:
                part = self._rgb(np.asarray(self._slide.read_region(loc, level, (max(1, lw), r1 - r0))))
            except Exception as exc:  # any reader failure, as in read_region
                raise InputError(
                    f"{self.info.name}: cannot read the thumbnail at level {level} ({exc})"
                ) from exc
            out[y:y2] = cv2.resize(part, (tw, y2 - y), interpolation=cv2.INTER_AREA)
            y = y2
        return out, factor

    def _sampled_thumbnail(self, level: int, d: float, lw: int, lh: int, th: int, tw: int) -> np.ndarray:
        """A bounded read: at most THUMB_WINDOWS windows of THUMB_WINDOW² level px on a regular lattice,
        each scaled into its block of the thumbnail. Costs the same for any slide size; the tissue mask is
        coarser (noted in `warnings`)."""
        import cv2

        gy = max(1, min(th, round(math.sqrt(THUMB_WINDOWS * th / tw))))
        gx = max(1, min(tw, THUMB_WINDOWS // gy))
        w, h = min(THUMB_WINDOW, lw), min(THUMB_WINDOW, lh)
        bx, by = self._bounds
        out = np.empty((th, tw, 3), np.uint8)
        for i in range(gy):
            y0, y1 = i * th // gy, (i + 1) * th // gy
            ly = min(max(0, int((y0 + y1) / 2 * lh / th - h / 2)), lh - h)
            for j in range(gx):
                x0, x1 = j * tw // gx, (j + 1) * tw // gx
                lx = min(max(0, int((x0 + x1) / 2 * lw / tw - w / 2)), lw - w)
                loc = (int(round(bx + lx * d)), int(round(by + ly * d)))
                try:
                    part = self._rgb(np.asarray(self._slide.read_region(loc, level, (w, h))))
                except Exception as exc:  # any reader failure, as in read_region
                    raise InputError(
                        f"{self.info.name}: cannot read the thumbnail at level {level} ({exc})"
                    ) from exc
                out[y0:y1, x0:x1] = cv2.resize(part, (x1 - x0, y1 - y0), interpolation=cv2.INTER_AREA)
        self.warnings.append(
            f"{self.info.name}: no pyramid level small enough for the tissue thumbnail (level {level} is "
            f"{lw}x{lh}); it was sampled from {gy * gx} windows, so tissue detection is coarse "
            "(--no-tissue processes every tile)"
        )
        return out

    def close(self) -> None:
        slide, self._slide = getattr(self, "_slide", None), None
        if slide is not None:
            slide.close()
        check, self._check = getattr(self, "_check", None), None
        if check is not None:
            check.close()
