"""Bad input gives a clear InputError naming the argument; odd but valid tiles work."""

from __future__ import annotations

import numpy as np
import pytest

from cellvit_trt.errors import InputError
from cellvit_trt.kernels import CellTable, PostProcessor, PostProcessParams


@pytest.fixture(scope="module")
def pp():
    return PostProcessor()


def _ok(h=32, w=32, n=None):
    lead = () if n is None else (n,)
    fg = np.zeros(lead + (h, w), np.uint8)
    hv = np.zeros(lead + (2, h, w), np.float16)
    tm = np.zeros(lead + (h, w), np.uint8)
    return fg, hv, tm


@pytest.mark.parametrize(
    "change,arg,needle",
    [
        (lambda f, h, t: (f[None, None], h, t), "fg", "shape"),
        (lambda f, h, t: (f, h[:1], t), "hv", "2 channels"),
        (lambda f, h, t: (f, np.zeros((3, 32, 32), np.float32), t), "hv", "2 channels"),
        (lambda f, h, t: (f, h[:, :16], t), "hv", "shape"),
        (lambda f, h, t: (f, h, t[:16]), "type_map", "shape"),
        (lambda f, h, t: (f, h.astype(np.int16), t), "hv", "dtype"),
        (lambda f, h, t: (f.astype(np.int32), h, t), "fg", "dtype"),
        (lambda f, h, t: (f, h, t.astype(np.float32)), "type_map", "dtype"),
        (lambda f, h, t: (f, h, np.full(t.shape, 300, np.int32)), "type_map", "0..255"),
        (lambda f, h, t: (np.full(f.shape, 2, np.uint8), h, t), "fg", "0/1"),
        (lambda f, h, t: (np.full(f.shape, 3.0, np.float32), h, t), "fg", "probability"),
        (lambda f, h, t: (np.full(f.shape, np.nan, np.float32), h, t), "fg", "NaN"),
        (lambda f, h, t: (f, np.full(h.shape, np.nan, np.float16), t), "hv", "NaN"),
        (lambda f, h, t: (f, np.full(h.shape, np.inf, np.float32), t), "hv", "NaN or infinite"),
        (
            lambda f, h, t: (
                np.zeros((0, 32), np.uint8),
                np.zeros((2, 0, 32), np.float32),
                np.zeros((0, 32), np.uint8),
            ),
            "fg",
            "non-empty",
        ),
    ],
)
def test_bad_input_raises_input_error(pp, change, arg, needle):
    fg, hv, tm = change(*_ok())
    with pytest.raises(InputError) as err:
        pp.process_tile(fg, hv, tm)
    msg = str(err.value)
    assert msg.startswith(arg) and needle in msg, msg
    assert isinstance(err.value, ValueError)


def test_batch_shape_mismatch_and_tile_vs_batch(pp):
    fg, hv, tm = _ok(n=2)
    with pytest.raises(InputError, match="hv"):
        pp.process_batch(fg, hv[:1], tm)
    with pytest.raises(InputError, match="process_batch"):
        pp.process_tile(fg, hv, tm)
    assert len(pp.process_batch(fg, hv, tm)) == 2


def test_empty_tiny_and_odd_tiles(pp):
    for h, w in [(1, 1), (1, 40), (7, 3), (256, 256)]:
        fg, hv, tm = _ok(h, w)
        out = pp.process_tile(fg, hv, tm)
        assert out.inst_map.shape == (h, w) and out.inst_map.dtype == np.int32
        assert len(out.cells) == 0 and out.cells.to_upstream_dict() == {}
    # all foreground with a constant HV map: no markers, no cells, no crash
    out = pp.process_tile(
        np.ones((64, 64), bool), np.zeros((2, 64, 64), np.float32), np.ones((64, 64), np.uint8)
    )
    assert out.inst_map.max() == 0 and len(out.cells) == 0


def test_params():
    assert PostProcessParams.for_magnification(40) == PostProcessParams()
    p20 = PostProcessParams.for_magnification(20)
    assert (p20.sobel_ksize, p20.object_size) == (11, 3)
    assert PostProcessParams.for_magnification(40.0).sobel_ksize == 21
    for bad in (30, "x", None, 40.5):
        with pytest.raises(InputError, match="magnification"):
            PostProcessParams.for_magnification(bad)
    with pytest.raises(InputError, match="sobel_ksize"):
        PostProcessParams(sobel_ksize=4)
    with pytest.raises(InputError, match="object_size"):
        PostProcessParams(object_size=-1)
    with pytest.raises(InputError, match="marker_threshold"):
        PostProcessParams(marker_threshold=1.5)
    with pytest.raises(AttributeError):  # frozen dataclass
        PostProcessParams().sobel_ksize = 3  # frozen


def test_cell_table_empty_layout():
    t = CellTable.empty()
    assert len(t) == 0 and t.bbox.shape == (0, 4) and t.centroid.shape == (0, 2) and t.contours == []


def test_warmup_tile_runs_the_whole_pipeline():
    from cellvit_trt.kernels import warmup
    from cellvit_trt.kernels.postprocess import warmup_tile

    assert warmup() > 0.0
    out = PostProcessor().process_tile(*warmup_tile())
    assert out.inst_map.max() == 3 and len(out.cells) == 3  # the touching pair is split
