"""Pyramidal synthetic slides (Aperio-style tiled TIFF) with exact ground truth beside them.

Layout of the file, as Aperio SVS and as OpenSlide / tiffslide / tifffile expect it:
page 0 = level 0 (tiled), page 1 = thumbnail (stripped), pages 2.. = levels with downsample 2, 4, ... (tiled).
Page 0 carries an Aperio ImageDescription (`Aperio ...|AppMag = 40|MPP = 0.25`), and every page carries
XResolution/YResolution in pixels per centimetre, so both readers report the mpp.

Ground truth beside `<name>.svs`/`.tif`:
- `<stem>.cells.npz`: id, type, centroid (x, y), area, bbox (rmin, cmin, rmax+1, cmax+1) in level-0
  pixels, plus width, height, mpp, seed;
- `<stem>.labels.tif` (optional): the level-0 instance map, int32, tiled, deflate.

Memory stays bounded: the slide is rendered in strips of `block` rows (each strip in `block`-wide windows of
the same virtual slide, so there are no seams), spooled to raw files, and the TIFF pages are written tile band
by tile band from them. Peak memory is a few strips, whatever the slide size.
"""

from __future__ import annotations

import math
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cellvit_trt.errors import InputError
from cellvit_trt.io import atomic_path
from cellvit_trt.synthetic.render import render_window
from cellvit_trt.synthetic.tile import CellList
from cellvit_trt.synthetic.world import World

APERIO_HEADER = "Aperio Image Library v12.0.16"  # OpenSlide and tifffile recognise Aperio by this prefix


@dataclass(frozen=True)
class SlideTruth:
    slide: Path
    cells_path: Path
    labels_path: Path | None
    width: int
    height: int
    mpp: float
    levels: tuple[int, ...]  # downsample factors
    n_cells: int


def truth_paths(slide: str | Path) -> tuple[Path, Path]:
    """(cells npz, labels tif) beside a slide."""
    slide = Path(slide)
    return slide.with_name(slide.stem + ".cells.npz"), slide.with_name(slide.stem + ".labels.tif")


def load_slide_cells(slide_or_npz: str | Path) -> tuple[CellList, dict]:
    """Ground-truth cells of a synthetic slide and its metadata (width, height, mpp, seed)."""
    p = Path(slide_or_npz)
    if not p.name.endswith(".cells.npz"):
        p = truth_paths(p)[0]
    if not p.is_file():
        raise InputError(f"synthetic slide ground truth {p}: file not found")
    with np.load(p) as z:
        cells = CellList(id=z["id"], type=z["type"], centroid=z["centroid"], area=z["area"], bbox=z["bbox"])
        meta = {k: z[k].item() for k in ("width", "height", "mpp", "seed")}
    return cells, meta


class _Cells:
    """Per-cell sums accumulated over blocks (a cell may span several)."""

    def __init__(self) -> None:
        self.ids: dict[int, int] = {}  # nucleus key -> id (1..N, first seen)
        self.type: list[int] = []
        self.area = np.zeros(0, np.int64)
        self.sx = np.zeros(0)
        self.sy = np.zeros(0)
        self.bbox = np.zeros((0, 4), np.int64)

    def ids_for(self, keys: np.ndarray, types: np.ndarray) -> np.ndarray:
        out = np.empty(keys.size, np.int64)
        for j, (k, t) in enumerate(zip(keys.tolist(), types.tolist(), strict=True)):
            i = self.ids.get(k)
            if i is None:
                i = self.ids[k] = len(self.ids) + 1
                self.type.append(int(t))
            out[j] = i
        n = len(self.ids) + 1
        if self.area.size < n:
            grow = n - self.area.size
            self.area = np.concatenate([self.area, np.zeros(grow, np.int64)])
            self.sx = np.concatenate([self.sx, np.zeros(grow)])
            self.sy = np.concatenate([self.sy, np.zeros(grow)])
            big = np.iinfo(np.int64).max
            self.bbox = np.concatenate([self.bbox, np.tile([big, big, -1, -1], (grow, 1))])
        return out

    def add(self, gid: np.ndarray, y0: int, x0: int) -> None:
        """Accumulate a block's global-id map (0 = background) at offset (y0, x0)."""
        flat = gid.ravel()
        sel = flat > 0
        if not sel.any():
            return
        ids = flat[sel]
        rows, cols = np.divmod(np.nonzero(sel)[0], gid.shape[1])
        n = self.area.size
        self.area += np.bincount(ids, minlength=n)
        self.sx += np.bincount(ids, weights=cols + x0, minlength=n)
        self.sy += np.bincount(ids, weights=rows + y0, minlength=n)
        np.minimum.at(self.bbox[:, 0], ids, rows + y0)
        np.minimum.at(self.bbox[:, 1], ids, cols + x0)
        np.maximum.at(self.bbox[:, 2], ids, rows + y0 + 1)
        np.maximum.at(self.bbox[:, 3], ids, cols + x0 + 1)

    def table(self) -> CellList:
        ids = np.nonzero(self.area[1:])[0] + 1
        a = self.area[ids]
        return CellList(
            id=ids.astype(np.int32),
            type=np.asarray(self.type, np.uint8)[ids - 1],
            centroid=np.stack([self.sx[ids] / a, self.sy[ids] / a], axis=1),
            area=a,
            bbox=self.bbox[ids].astype(np.int32),
        )


def _downsample(strip: np.ndarray, f: int) -> np.ndarray:
    """f x f box average of a uint8 [h, w, 3] strip (OpenCV INTER_AREA, exact for integer factors); the
    remainder rows/cols are dropped."""
    import cv2

    h, w = (strip.shape[0] // f) * f, (strip.shape[1] // f) * f
    return cv2.resize(np.ascontiguousarray(strip[:h, :w]), (w // f, h // f), interpolation=cv2.INTER_AREA)


def _tiles_from_raw(path: Path, shape: tuple[int, ...], dtype, tile: int, fill):
    """Yield the tiles (row-major) of a raw row-major array file, one band of `tile` rows at a time."""
    h, w = shape[:2]
    rest = shape[2:]
    row_items = w * int(np.prod(rest, dtype=np.int64))
    itemsize = np.dtype(dtype).itemsize
    with open(path, "rb") as fh:
        for r0 in range(0, h, tile):
            rows = min(tile, h - r0)
            fh.seek(r0 * row_items * itemsize)
            band = np.fromfile(fh, dtype=dtype, count=rows * row_items).reshape((rows, w, *rest))
            for c0 in range(0, w, tile):
                t = np.full((tile, tile, *rest), fill, dtype=dtype)
                part = band[:, c0 : c0 + tile]
                t[:rows, : part.shape[1]] = part
                yield t


def write_synthetic_slide(
    path: str | Path,
    width: int,
    height: int,
    mpp: float = 0.25,
    seed: int = 0,
    tile_size: int = 256,
    downsamples: tuple[int, ...] = (1, 2, 4),
    compression: str = "jpeg",
    quality: int = 90,
    preset: str = "mixed",
    glass_fraction: float = 0.35,
    tissue_scale_um: float = 250.0,
    write_labels: bool = True,
    block: int = 1024,
) -> SlideTruth:
    """Write a pyramidal Aperio-style TIFF of a synthetic slide and its ground truth beside it.

    `compression`: "jpeg" (lossy, like scanners; needs imagecodecs) or "deflate"/"none" (lossless, so
    pixels read back equal the rendered ones). The returned cells are in level-0 pixels.
    """
    import tifffile

    path = Path(path)
    if width < 16 or height < 16:
        raise InputError(f"slide size {width}x{height}: expected at least 16 px per side")
    if tile_size % 16 or tile_size < 16:
        raise InputError(f"tile_size {tile_size}: expected a positive multiple of 16 (TIFF tiling)")
    ds = tuple(int(d) for d in downsamples)
    if not ds or ds[0] != 1 or any(b <= a for a, b in zip(ds, ds[1:], strict=False)):
        raise InputError(
            f"downsamples {downsamples}: expected increasing factors starting with 1, e.g. (1, 2, 4)"
        )
    comp = {"jpeg": "jpeg", "deflate": "zlib", "zlib": "zlib", "none": None}.get(compression.lower(), "?")
    if comp == "?":
        raise InputError(f"compression {compression!r}: expected 'jpeg', 'deflate' or 'none'")
    lcm = math.lcm(*ds)
    block = max(lcm, (block // lcm) * lcm)
    world = World(
        seed=int(seed),
        mpp=float(mpp),
        preset=preset,
        glass_fraction=glass_fraction,
        tissue_scale_um=tissue_scale_um,
    )
    cells_path, labels_path = truth_paths(path)
    cells = _Cells()
    dims = [(height // f, width // f) for f in ds]

    with tempfile.TemporaryDirectory(
        prefix="cellvit-synth-", dir=path.parent if path.parent.exists() else None
    ) as tmp:
        raws = [Path(tmp) / f"level{i}.raw" for i in range(len(ds))]
        raw_lab = Path(tmp) / "labels.raw"
        outs = [open(p, "wb") for p in raws]
        lab_out = open(raw_lab, "wb") if write_labels else None
        try:
            for y0 in range(0, height, block):
                h = min(block, height - y0)
                strip = np.empty((h, width, 3), np.uint8)
                gstrip = np.zeros((h, width), np.int32)
                for x0 in range(0, width, block):
                    w = min(block, width - x0)
                    win = render_window(world, y0, x0, h, w)
                    strip[:, x0 : x0 + w] = win.image
                    present = np.nonzero(
                        np.bincount(win.label.ravel() + 1, minlength=len(win.nuclei) + 1)[1:]
                    )[0]
                    lut = np.zeros(len(win.nuclei) + 1, np.int64)
                    lut[present + 1] = cells.ids_for(win.nuclei.key[present], win.nuclei.type[present])
                    gid = lut[win.label + 1]
                    cells.add(gid, y0, x0)
                    gstrip[:, x0 : x0 + w] = gid
                outs[0].write(strip.tobytes())
                for out, f in zip(outs[1:], ds[1:], strict=True):
                    out.write(_downsample(strip, f).tobytes())
                if lab_out is not None:
                    lab_out.write(gstrip.tobytes())
        finally:
            for fh in outs:
                fh.close()
            if lab_out is not None:
                lab_out.close()

        _write_pyramid(tifffile, path, raws, dims, ds, tile_size, comp, quality, mpp, world.seed)
        if write_labels:
            with atomic_path(labels_path) as tmp_lab:
                with tifffile.TiffWriter(tmp_lab, bigtiff=height * width * 4 > 2**31) as tif:
                    tif.write(
                        _tiles_from_raw(raw_lab, (height, width), np.int32, tile_size, 0),
                        shape=(height, width),
                        dtype=np.int32,
                        tile=(tile_size, tile_size),
                        compression="zlib",
                        resolution=(1e4 / mpp, 1e4 / mpp),
                        resolutionunit="CENTIMETER",
                        metadata=None,
                        description=f"cellvit-trt synthetic instance labels seed={seed}",
                    )

    table = cells.table()
    with atomic_path(cells_path) as tmp_npz:
        with open(tmp_npz, "wb") as fh:
            np.savez_compressed(
                fh,
                id=table.id,
                type=table.type,
                centroid=table.centroid,
                area=table.area,
                bbox=table.bbox,
                width=np.int64(width),
                height=np.int64(height),
                mpp=np.float64(mpp),
                seed=np.int64(seed),
            )
    return SlideTruth(
        slide=path,
        cells_path=cells_path,
        labels_path=labels_path if write_labels else None,
        width=width,
        height=height,
        mpp=mpp,
        levels=ds,
        n_cells=len(table),
    )


def _write_pyramid(
    tifffile, path: Path, raws: list[Path], dims, ds, tile: int, comp, quality: int, mpp: float, seed: int
) -> None:
    h0, w0 = dims[0]
    mag = round(10.0 / mpp)
    desc0 = (
        f"{APERIO_HEADER}\r\n{w0}x{h0} [0,0 {w0}x{h0}] ({tile}x{tile}) "
        f"{'JPEG/RGB Q=' + str(quality) if comp == 'jpeg' else 'RAW'}"
        f"|AppMag = {mag}|MPP = {mpp:.6g}|Filename = {path.stem}"
        f"|Title = cellvit-trt synthetic slide seed {seed}"
    )
    kw = {"compression": comp, "compressionargs": {"level": quality} if comp == "jpeg" else None}
    if comp is None:
        kw = {"compression": None}
    if comp == "zlib":
        kw = {"compression": "zlib", "compressionargs": {"level": 6}}
    big = h0 * w0 * 3 > 2**31
    with atomic_path(path) as tmp:
        with tifffile.TiffWriter(tmp, bigtiff=big) as tif:
            for i, (raw, (h, w), f) in enumerate(zip(raws, dims, ds, strict=True)):
                res = (1e4 / (mpp * f), 1e4 / (mpp * f))
                desc = (
                    desc0
                    if i == 0
                    else f"{APERIO_HEADER}\r\n{w0}x{h0} -> {w}x{h} - |AppMag = {mag}|MPP = {mpp * f:.6g}"
                )
                tif.write(
                    _tiles_from_raw(raw, (h, w, 3), np.uint8, tile, 255),
                    shape=(h, w, 3),
                    dtype=np.uint8,
                    tile=(tile, tile),
                    photometric="rgb",
                    resolution=res,
                    resolutionunit="CENTIMETER",
                    metadata=None,
                    description=desc,
                    subfiletype=0,
                    **kw,
                )
                if i == 0:
                    _write_thumbnail(tif, raws[-1], dims[-1], kw)


def _write_thumbnail(tif, raw: Path, dims: tuple[int, int], kw: dict) -> None:
    """Page 1: a stripped thumbnail (Aperio convention; tifffile's SVS parser expects it there)."""
    import cv2

    h, w = dims
    img = np.fromfile(raw, dtype=np.uint8).reshape(h, w, 3)
    scale = min(1.0, 768.0 / max(h, w))
    th, tw = max(1, round(h * scale)), max(1, round(w * scale))
    thumb = cv2.resize(img, (tw, th), interpolation=cv2.INTER_AREA) if scale < 1 else img
    tif.write(
        np.ascontiguousarray(thumb),
        photometric="rgb",
        metadata=None,
        description="thumbnail",
        subfiletype=0,
        rowsperstrip=16,
        **kw,
    )
