"""A cheap content identity of an input: which slide this is, without reading the whole file.

    content_digest(path) -> str     # hex SHA-256 over the size, header, tail and a sample of the content

What is hashed (a few MB whatever the slide size):
- the size, the first MiB (the header: TIFF IFDs of most scanners, PNG/JPEG headers) and the last 256 KiB
  (formats that put their index at the end), and 16 blocks of 64 KiB spread evenly over the file;
- for a TIFF (SVS, NDPI, OME-TIFF, pyramidal TIFF), every level's tile table (offsets and byte counts:
  re-encoded tiles move them) and the bytes of up to 32 level-0 tiles spread over the slide;
- a folder input (DICOM) or a slide's companion folder (MIRAX `<stem>/`): each file's name, size, head
  and tail.
Files up to 4 MiB are hashed whole. The digest owns output folders (`runtime.outdir`) and is part of the
`--resume` fingerprint, so a slide replaced by another of the same size and mtime is not taken for it.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from cellvit_trt.errors import InputError

WHOLE_FILE_MAX = 4 << 20
HEAD = 1 << 20
TAIL = 256 << 10
BLOCKS, BLOCK = 16, 64 << 10
TILES, TILE_MAX = 32, 1 << 20
COMPANION_FILES, COMPANION_BYTES = 256, 64 << 10


def _read(fh, offset: int, size: int) -> bytes:
    fh.seek(offset)
    return fh.read(size)


def _sample_file(h, path: Path) -> None:
    size = path.stat().st_size
    h.update(f"{path.name}:{size}\n".encode())
    with open(path, "rb") as fh:
        if size <= WHOLE_FILE_MAX:
            while block := fh.read(1 << 20):
                h.update(block)
            return
        h.update(_read(fh, 0, HEAD))
        h.update(_read(fh, size - TAIL, TAIL))
        for i in range(BLOCKS):
            h.update(_read(fh, (size - BLOCK) * (i + 1) // (BLOCKS + 1), BLOCK))


def _sample_tiff(h, path: Path) -> None:
    """Tile tables of every level and a spread of level-0 tiles; nothing when tifffile cannot parse it."""
    import numpy as np
    import tifffile

    try:
        with tifffile.TiffFile(path) as tf, open(path, "rb") as fh:
            series = tf.series[0]
            for level in series.levels:
                for page in level.pages:
                    if page is None:
                        continue
                    h.update(np.asarray(page.dataoffsets, np.uint64).tobytes())
                    h.update(np.asarray(page.databytecounts, np.uint64).tobytes())
            base = series.levels[0].pages[0]
            offsets, counts = base.dataoffsets, base.databytecounts
            n = len(offsets)
            for i in sorted({(n - 1) * k // max(1, TILES - 1) for k in range(min(n, TILES))}):
                h.update(_read(fh, int(offsets[i]), min(int(counts[i]), TILE_MAX)))
    except Exception:  # not a TIFF tifffile understands: the byte samples stand alone
        h.update(b"no-tiff-structure")


def _sample_folder(h, folder: Path) -> None:
    files = sorted(p for p in folder.rglob("*") if p.is_file())[:COMPANION_FILES]
    for p in files:
        size = p.stat().st_size
        h.update(f"{p.relative_to(folder)}:{size}\n".encode())
        with open(p, "rb") as fh:
            h.update(_read(fh, 0, COMPANION_BYTES))
            h.update(_read(fh, max(0, size - COMPANION_BYTES), COMPANION_BYTES))


def content_digest(path: str | Path) -> str:
    path = Path(path)
    try:
        return _digest(path)
    except OSError as exc:
        raise InputError(f"{path}: cannot read it ({exc.strerror or exc})") from exc


def _digest(path: Path) -> str:
    from cellvit_trt.runtime.sources.detect import magic_format

    h = hashlib.sha256(b"cellvit-trt-content/1\n")
    if path.is_dir():
        _sample_folder(h, path)
        return h.hexdigest()
    _sample_file(h, path)
    with open(path, "rb") as fh:
        if magic_format(fh.read(132)) == "tiff" and path.stat().st_size > WHOLE_FILE_MAX:
            _sample_tiff(h, path)
    companion = path.with_suffix("")  # MIRAX keeps its tiles in <stem>/ beside the .mrxs index
    if path.suffix.lower() == ".mrxs" and companion.is_dir():
        _sample_folder(h, companion)
    return h.hexdigest()
