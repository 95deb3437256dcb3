"""libjpeg's own error reporting for the JPEG tiles of a TIFF read through tiffslide.

    check = JpegTileCheck.open(path)         # None: not a JPEG-tiled TIFF, or simplejpeg missing
    check.window(level, x, y, w, h)          # InputError naming the TIFF tile whose data is corrupt

OpenSlide turns every libjpeg warning ("Corrupt JPEG data: premature end of data segment", "extraneous bytes
before marker") into an error. tiffslide decodes through tifffile/imagecodecs, whose JPEG decoder drops those
warnings: a tile whose compressed bytes were damaged decodes as garbage without a word (measured: zeroing a
third of one 256² tile's bytes changed 45812 pixels, no error). This check decodes each TIFF tile that a read
touches once more with simplejpeg in strict mode (libjpeg-turbo, warnings raised) and remembers the outcome,
so each tile costs one extra decode per run.
"""

from __future__ import annotations

import threading
from pathlib import Path

from cellvit_trt.errors import InputError

JPEG = 7  # TIFF Compression tag: new-style JPEG (Aperio's 33003/33005 are JPEG 2000, not checked here)


class JpegTileCheck:
    def __init__(self, path: Path, levels: list, handle, decode) -> None:
        self.path, self._levels, self._fh, self._decode = path, levels, handle, decode
        self._ok: set[tuple[int, int]] = set()
        self._bad: dict[tuple[int, int], str] = {}
        self._lock = threading.Lock()

    @classmethod
    def open(cls, path: Path) -> JpegTileCheck | None:
        try:
            import simplejpeg
            import tifffile
        except ImportError:  # the check is an extra safety net of the slides extra
            return None
        try:
            with tifffile.TiffFile(path) as tf:
                levels = []
                for level in tf.series[0].levels:
                    page = level.pages[0]
                    if not page.is_tiled or page.compression != JPEG or page.planarconfig != 1:
                        levels.append(None)
                        continue
                    levels.append(
                        (
                            int(page.tilewidth),
                            int(page.tilelength),
                            -(-int(page.imagewidth) // int(page.tilewidth)),
                            list(page.dataoffsets),
                            list(page.databytecounts),
                            bytes(page.jpegtables or b""),
                        )
                    )
        except Exception:  # not parseable by tifffile: tiffslide will fail on its own with a message
            return None
        if not any(levels):
            return None
        return cls(path, levels, open(path, "rb"), simplejpeg.decode_jpeg)

    def _tile(self, level: int, index: int) -> str | None:
        tw, th, across, offsets, counts, tables = self._levels[level]
        if counts[index] == 0:
            return None  # not stored (sparse): the reader fills it
        self._fh.seek(offsets[index])
        data = self._fh.read(counts[index])
        if tables and len(tables) > 4:  # shared tables spliced in: tables without EOI + tile without SOI
            data = tables[:-2] + data[2:]
        try:
            self._decode(data, colorspace="rgb", strict=True)
        except ValueError as exc:
            return str(exc)
        return None

    def window(self, level: int, x: int, y: int, w: int, h: int) -> None:
        """Raise InputError when a TIFF tile under the level-px window decodes with libjpeg errors."""
        if level >= len(self._levels) or self._levels[level] is None:
            return
        tw, th, across, offsets, _, _ = self._levels[level]
        rows = range(max(0, y) // th, (max(0, y + h - 1)) // th + 1)
        cols = range(max(0, x) // tw, min(across - 1, max(0, x + w - 1) // tw) + 1)
        with self._lock:
            for r in rows:
                for c in cols:
                    key = (level, r * across + c)
                    if key[1] >= len(offsets) or key in self._ok:
                        continue
                    if key not in self._bad:
                        message = self._tile(level, key[1])
                        if message is None:
                            self._ok.add(key)
                            continue
                        self._bad[key] = message
                    raise InputError(
                        f"{self.path}: TIFF tile {key[1]} (level {level}, row {r}, col {c}) decodes with "
                        f"errors ({self._bad[key]})"
                    )

    def close(self) -> None:
        self._fh.close()
