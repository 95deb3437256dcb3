"""A Tile message -> uint8 [h, w, 3] RGB pixels at a level-0 position, or a SlideError saying what is wrong.

Checks come before any decoding: the declared size against the pixel limit, the position against the slide
and the declared layout, raw byte counts, and a JPEG's own header size against the declared size, so a
hostile message can never make the server decode more than `max_tile_pixels`.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np

from cellvit_trt.serve.errors import SlideError


@dataclass(frozen=True)
class Layout:
    """The lattice a client declared (tile size and stride in level-0 px); `any` when it declared none."""

    tile_width: int = 0
    tile_height: int = 0
    stride_x: int = 0
    stride_y: int = 0

    @property
    def any(self) -> bool:
        return self.tile_width == 0

    @classmethod
    def from_message(cls, msg, max_tile_pixels: int) -> Layout:
        if msg is None or (msg.tile_width == 0 and msg.tile_height == 0):
            return cls()
        tw, th = int(msg.tile_width), int(msg.tile_height)
        if tw < 1 or th < 1 or tw * th > max_tile_pixels:
            raise SlideError(
                "INVALID_ARGUMENT",
                f"layout: tile {tw}x{th} px, expected both >= 1 and at most {max_tile_pixels} pixels",
            )
        sx, sy = int(msg.stride_x) or tw, int(msg.stride_y) or th
        if sx > tw or sy > th:
            raise SlideError(
                "INVALID_ARGUMENT", f"layout: stride {sx}x{sy} larger than the tile {tw}x{th} leaves gaps"
            )
        return cls(tw, th, sx, sy)


def decode_tile(tile, width: int, height: int, layout: Layout, max_tile_pixels: int) -> np.ndarray:
    """Pixels of `tile` (a scanner_pb2.Tile) checked against a width x height slide and `layout`."""
    x, y, w, h = int(tile.x), int(tile.y), int(tile.width), int(tile.height)
    where = f"tile at x={x} y={y}"
    if w < 1 or h < 1:
        raise SlideError("INVALID_ARGUMENT", f"{where}: size {w}x{h}, expected width and height >= 1")
    if w * h > max_tile_pixels:
        raise SlideError(
            "RESOURCE_EXHAUSTED",
            f"{where}: {w}x{h} = {w * h} pixels, the server takes at most {max_tile_pixels}",
        )
    if x + w > width or y + h > height:
        raise SlideError(
            "OUT_OF_RANGE",
            f"{where}: {w}x{h} px reaches x={x + w} y={y + h}, outside the declared {width}x{height} slide",
        )
    if not layout.any:
        if x % layout.stride_x or y % layout.stride_y:
            raise SlideError(
                "INVALID_ARGUMENT",
                f"{where}: not on the declared lattice (stride {layout.stride_x}x{layout.stride_y})",
            )
        want_w, want_h = min(layout.tile_width, width - x), min(layout.tile_height, height - y)
        if (w, h) != (want_w, want_h):
            raise SlideError(
                "INVALID_ARGUMENT",
                f"{where}: size {w}x{h}, expected {want_w}x{want_h} (declared tile "
                f"{layout.tile_width}x{layout.tile_height}, cut at the slide's edge)",
            )
    kind = tile.WhichOneof("pixels")
    if kind == "rgb":
        data = tile.rgb
        if len(data) != w * h * 3:
            raise SlideError(
                "INVALID_ARGUMENT", f"{where}: {len(data)} bytes of RGB, expected {w}x{h}x3 = {w * h * 3}"
            )
        return np.frombuffer(data, np.uint8).reshape(h, w, 3)
    if kind == "jpeg":
        return _jpeg(tile.jpeg, w, h, where)
    raise SlideError("INVALID_ARGUMENT", f"{where}: no pixels (set rgb or jpeg)")


def _jpeg(data: bytes, w: int, h: int, where: str) -> np.ndarray:
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data), formats=["JPEG"]) as im:
            if im.size != (w, h):  # from the header: nothing decoded yet
                raise SlideError(
                    "INVALID_ARGUMENT", f"{where}: the JPEG is {im.size[0]}x{im.size[1]} px, declared {w}x{h}"
                )
            rgb = np.asarray(im.convert("RGB"))
    except SlideError:
        raise
    except Exception as exc:  # Pillow: UnidentifiedImageError, OSError (truncated), SyntaxError (bad markers)
        raise SlideError(
            "INVALID_ARGUMENT", f"{where}: cannot decode the JPEG ({type(exc).__name__}: {exc})"
        ) from exc
    return rgb
