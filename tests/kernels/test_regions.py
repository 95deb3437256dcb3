"""The region-restricted path gives exactly what the whole-tile path gives (which calls OpenCV itself and is
checked against the oracle), on maps chosen to stress each region argument of docs/kernels.md "Regions":
tile-wide Sobel extremes lying far from the foreground, nuclei at the filters' reach from each other and from
the tile border, holes enclosed by one or several components (also diagonally joined, also nested), many
small blobs, one huge blob, flat or offset HV maps, x20 constants, odd tile shapes.
"""

from __future__ import annotations

import zlib

import numpy as np
import pytest
from scipy import ndimage as ndi

import cellvit_trt.kernels.postprocess as postprocess
from cellvit_trt.kernels import PostProcessor, PostProcessParams
from cellvit_trt.kernels.cells import measure_instances, measure_present_into, measure_runs
from cellvit_trt.kernels.extremes import CELL, cell_bounds, row_bounds
from cellvit_trt.kernels.layout import cover_runs, fg_groups, row_runs
from cellvit_trt.kernels.local_markers import fill_groups
from cellvit_trt.kernels.local_relief import sobel_at_runs
from cellvit_trt.kernels.morphology import kept_runs, label4_from_runs
from cellvit_trt.kernels.replicas import region_path_ok
from cellvit_trt.kernels.sobel import sobel_kernels, sobel_x, sobel_y
from cellvit_trt.kernels.watershed import seeds_from_runs

from .reference import expected_cut
from .synth_maps import maps_from_instances, random_instances, random_mix

X40 = PostProcessParams()
X20 = PostProcessParams.for_magnification(20)


def _whole_tile(monkeypatch, params, fg, hv, tm):
    with monkeypatch.context() as m:
        m.setattr(postprocess, "region_path_ok", lambda p: False)
        return PostProcessor(params).process_tile(fg, hv, tm)


def assert_same_as_whole_tile(monkeypatch, fg, hv, tm, params=X40):
    """Region path == whole-tile path: the instance map and every cell field."""
    assert region_path_ok(params)
    ours = PostProcessor(params).process_tile(fg, hv, tm)
    ref = _whole_tile(monkeypatch, params, fg, hv, tm)
    np.testing.assert_array_equal(ours.inst_map, ref.inst_map)
    a, b = ours.cells, ref.cells
    for f in ("id", "bbox", "centroid", "area", "type", "type_prob", "type_count"):
        np.testing.assert_array_equal(getattr(a, f), getattr(b, f), err_msg=f)
    assert len(a.contours) == len(b.contours)
    for ca, cb in zip(a.contours, b.contours, strict=True):
        np.testing.assert_array_equal(ca, cb)
    return ours


def _tile(inst, seed, **kw):
    maps = maps_from_instances(np.random.default_rng(seed), "t", inst, **kw)
    fg = (maps.binary_logits[..., 1] > maps.binary_logits[..., 0]).astype(np.uint8)
    tm = np.argmax(maps.type_logits, -1).astype(np.uint8)
    return fg, maps.hv, tm


def _disk(shape, cy, cx, r):
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r


@pytest.mark.parametrize("seed", range(24))
def test_random_tiles(monkeypatch, seed):
    rng = np.random.default_rng(seed)
    h, w = (int(v) for v in rng.integers(5, 260, 2))
    inst = random_mix(rng, h, w, 160)
    fg, hv, tm = _tile(inst, seed, noise=rng.uniform(0, 0.5), blur=rng.uniform(0, 1.5), fg_flip=0.02)
    params = X20 if seed % 4 == 3 else X40
    assert_same_as_whole_tile(monkeypatch, fg, hv, tm, params)


@pytest.mark.parametrize("branch_free", [False, True])
def test_whole_tile_relief_either_fuse(monkeypatch, branch_free):
    """Dense tiles (the relief over whole rows): the branching and the branch-free energy fuse give the
    whole-tile result alike."""
    import cellvit_trt.kernels.local_relief as local_relief

    monkeypatch.setattr(local_relief, "BRANCH_FREE_RUN", 10**9 if branch_free else 0)
    seen = []
    choose = local_relief._branch_free  # asked only for a relief over whole rows

    def spy(fg_runs):
        seen.append(choose(fg_runs))
        return seen[-1]

    monkeypatch.setattr(local_relief, "_branch_free", spy)
    for seed in range(4):
        rng = np.random.default_rng(100 + seed)
        h, w = (int(v) for v in rng.integers(60, 200, 2))
        inst = random_instances(rng, h, w, n=int(h * w / 120), rmin=3.0, rmax=8.0)
        fg, hv, tm = _tile(inst, seed, noise=0.3, fg_flip=0.03)
        assert_same_as_whole_tile(monkeypatch, fg, hv, tm)
    assert seen and set(seen) == {branch_free}


def test_extreme_far_from_the_foreground(monkeypatch):
    """A steep HV step far from every nucleus sets the tile-wide Sobel extremes: the bound must find it."""
    inst = np.zeros((160, 200), np.int32)
    inst[_disk(inst.shape, 30, 30, 7)] = 1
    inst[_disk(inst.shape, 30, 46, 7) & (inst == 0)] = 2
    fg, hv, tm = _tile(inst, 1, noise=0.02)
    hv = hv.astype(np.float32)
    plain = PostProcessor().process_tile(fg, hv, tm)
    assert plain.n_instances == 2
    for step in (0.6, 3.0):  # a cliff in the background, 100 px from the nuclei
        cliff = hv.copy()
        cliff[0, 100:, 150:] += step
        cliff[1, 120:, :60] -= step
        ours = assert_same_as_whole_tile(monkeypatch, fg, cliff, tm)
    # the big cliff sets the tile-wide Sobel extremes, so the nuclei's energies and the result change
    assert ours.n_instances != plain.n_instances


@pytest.mark.parametrize("gap", [7, 8, 9, 10, 11, 15, 16, 17, 20, 21, 22])
def test_nuclei_at_the_reach_of_the_filters(monkeypatch, gap):
    """Nuclei `gap` px apart in x and in y (the Sobel reach is 10, the run merge gap 16, the blur reach 1),
    and touching the tile border."""
    h, w = 96, 120
    inst = np.zeros((h, w), np.int32)
    k = 0
    for cy in (0, 40, 40 + gap + 12):
        for cx in (0, 30, 30 + gap + 12, w - 1):
            if cy < h:
                k += 1
                inst[_disk((h, w), cy, cx, 6) & (inst == 0)] = k
    fg, hv, tm = _tile(inst, gap, noise=0.1)
    assert_same_as_whole_tile(monkeypatch, fg, hv, tm)


def _ring_tile():
    """Ring nuclei with holes, a nucleus nested inside a ring, a ring made of two diagonally touching
    L-shaped blobs (one 8-connected group, two 4-connected components), and a ring cut by the tile border."""
    h, w = 128, 160
    inst = np.zeros((h, w), np.int32)
    ring = _disk((h, w), 40, 40, 18) & ~_disk((h, w), 40, 40, 9)
    inst[ring] = 1
    inst[_disk((h, w), 40, 40, 5)] = 2
    inst[_disk((h, w), 100, 120, 12) & ~_disk((h, w), 100, 120, 5)] = 3
    inst[80:83, 20:40] = 4  # two L shapes meeting only at diagonal corners
    inst[80:100, 20:23] = 4
    inst[100:103, 23:43] = 5
    inst[83:100, 43:46] = 5
    inst[_disk((h, w), 0, 100, 14) & ~_disk((h, w), 0, 100, 6)] = 6
    return inst


@pytest.mark.parametrize("seed", range(4))
def test_holes_rings_and_nesting(monkeypatch, seed):
    fg, hv, tm = _tile(_ring_tile(), seed, noise=0.05 + 0.1 * seed)
    assert_same_as_whole_tile(monkeypatch, fg, hv, tm)


def test_many_small_blobs_and_one_huge_blob(monkeypatch):
    rng = np.random.default_rng(5)
    h, w = 200, 240
    inst = np.zeros((h, w), np.int32)
    k = 0
    for cy in range(4, 90, 7):  # blobs of 8..16 px around the blob-size limit (10)
        for cx in range(4, w - 4, 7):
            k += 1
            size = int(rng.integers(8, 17))
            pts = [(cy + j // 4, cx + j % 4) for j in range(size)]
            for y, x in pts:
                inst[y, x] = k
    big = _disk((h, w), 160, 120, 60) & (np.arange(h)[:, None] > 100)
    inst[big] = k + 1
    fg, hv, tm = _tile(inst, 5, noise=0.2)
    assert_same_as_whole_tile(monkeypatch, fg, hv, tm)


@pytest.mark.parametrize("kind", ["constant", "offset", "tiny-range", "all-foreground", "empty", "specks"])
def test_degenerate_maps(monkeypatch, kind):
    rng = np.random.default_rng(zlib.crc32(kind.encode()))
    inst = random_instances(rng, 100, 130, 40, 3, 8)
    fg, hv, tm = _tile(inst, 3)
    hv = hv.astype(np.float32)
    if kind == "constant":
        hv[:] = 0.25
    elif kind == "offset":  # large offset, small range: the float32 bound is loose, the result exact
        hv = hv * 1e-3 + 5e3
    elif kind == "tiny-range":
        hv = (hv * 1e-30).astype(np.float32)
    elif kind == "all-foreground":
        fg[:] = 1
    elif kind == "empty":
        fg[:] = 0
    elif kind == "specks":  # isolated pixels only: all removed as < 10 px
        fg[:] = 0
        fg[::7, ::5] = 1
    assert_same_as_whole_tile(monkeypatch, fg, hv, tm)


def test_sobel_extremes_are_the_whole_tile_extremes():
    """sobel_at_runs: exact values on the covered runs, exact tile-wide min / max, for maps whose extremes
    lie anywhere (background spikes, flat zero background, noise)."""
    rng = np.random.default_rng(8)
    for it in range(40):
        h, w = (int(v) for v in rng.integers(3, 140, 2))
        src = rng.normal(0, 1, (h, w)).astype(np.float32) * np.float32(rng.choice([1e-3, 1.0, 50.0]))
        if it % 3 == 0:
            src[rng.random((h, w)) < 0.7] = 0  # flat background with ties at 0
        if it % 5 == 0:
            src[rng.integers(0, h), rng.integers(0, w)] += 40.0  # a spike somewhere
        binary = (rng.random((h, w)) < rng.choice([0.0, 0.002, 0.05, 0.4])).astype(np.uint8)
        ksize = int(rng.choice([21, 11]))
        cover, _, runs = cover_runs(h, w, *row_runs(binary), 16, 0.25)
        for got, want in zip(runs, row_runs(cover), strict=True):  # its runs are the cover's maximal runs
            np.testing.assert_array_equal(got, want)
        assert np.all(cover[binary > 0] == 1)
        np.testing.assert_array_equal(cover[0 : h - 1 : 2], cover[1:h:2])  # rows (0, 1), (2, 3)... paired
        for dx, filt in ((1, sobel_x), (0, sobel_y)):
            out = np.full((h, w), np.nan)
            vmin, vmax = sobel_at_runs(src, dx, ksize, cover, runs, out)
            ref = filt(_normalised(src), ksize)
            if binary.any() or cover.any():
                np.testing.assert_array_equal(out[cover > 0], ref[cover > 0])
                assert (vmin, vmax) == (ref.min(), ref.max()), (it, dx)


def _normalised(src):
    import cv2

    return cv2.normalize(src, None, 0, 1, cv2.NORM_MINMAX, cv2.CV_32F)


def test_cell_bounds_bound_the_filter():
    """The per-(row, cell) bounds from row-pass maxima / minima contain the float32 filter values."""
    rng = np.random.default_rng(9)
    for _ in range(20):
        h, w = (int(v) for v in rng.integers(5, 120, 2))
        src = rng.normal(0, 1, (h, w)).astype(np.float32)
        for dx in (1, 0):
            kx, ky = sobel_kernels(dx, 21)
            ncell = -(-w // CELL)
            cmax = np.empty((h, ncell), np.float32)
            cmin = np.empty((h, ncell), np.float32)
            row_bounds(src, kx[10:].astype(np.float32), dx == 1, cmax, cmin)
            hi = np.empty((h, ncell))
            lo = np.empty((h, ncell))
            cell_bounds(cmax, cmin, ky[10:].astype(np.float32), dx != 1, hi, lo)
            exact = (sobel_x if dx else sobel_y)(src, 21)
            for cb in range(ncell):
                seg = exact[:, cb * CELL : (cb + 1) * CELL]
                slack = 1e-4 * np.abs(exact).max()
                assert np.all(seg.max(1) <= hi[:, cb] + slack) and np.all(seg.min(1) >= lo[:, cb] - slack)


def test_cell_bounds_interior_rows_sum_as_the_row_loop():
    """cell_bounds' flattened interior loop (x40 / x20 windows) gives the bits of the tap-by-tap row loop."""
    from cellvit_trt.kernels.extremes import _rows

    rng = np.random.default_rng(11)
    for ksize in (21, 11):
        for dx in (1, 0):
            _, ky = sobel_kernels(dx, ksize)
            taps = ky[ksize // 2 :].astype(np.float32)
            for h, ncell in ((2 * (ksize // 2) + 1, 3), (97, 7), (1024, 32)):
                cmax = (rng.normal(0, 50, (h, ncell))).astype(np.float32)
                cmin = cmax - np.abs(rng.normal(0, 5, (h, ncell))).astype(np.float32)
                hi, lo = np.empty((h, ncell)), np.empty((h, ncell))
                cell_bounds(cmax, cmin, taps, dx != 1, hi, lo)
                a = ksize // 2
                signed = [-taps[-k] if dx != 1 and k < 0 else taps[abs(k)] for k in range(-a, a + 1)]
                g = np.array(signed, np.float64)
                hi_r, lo_r = np.empty((h, ncell)), np.empty((h, ncell))
                _rows(cmax.astype(np.float64), cmin.astype(np.float64), g, dx != 1, hi_r, lo_r, 0, h)
                assert np.array_equal(hi, hi_r) and np.array_equal(lo, lo_r), (ksize, dx, h)


def test_fill_groups_is_binary_fill_holes():
    """Hole filling per 8-connected foreground group (with the row-gap pre-check) == scipy on the tile."""
    rng = np.random.default_rng(10)
    n_holes = 0
    for it in range(150):
        h, w = (int(v) for v in rng.integers(4, 60, 2))
        fg = (rng.random((h, w)) < rng.uniform(0.3, 0.9)).astype(np.uint8)
        if it % 3 == 0:
            fg = ndi.binary_closing(fg).astype(np.uint8)
        labels, members, start = label4_from_runs(fg, int(rng.integers(0, 5)), *row_runs(fg))
        runs = kept_runs(labels, *row_runs(fg))
        marker = ((labels > 0) & (rng.random((h, w)) < rng.uniform(0.5, 1.0))).astype(np.uint8)
        group, boxes = fg_groups(labels, start.shape[0] - 2, *runs)
        filled = marker.copy()
        fill_groups(marker, labels, group, boxes, *runs, filled)
        ref = ndi.binary_fill_holes(marker).astype(np.uint8)
        np.testing.assert_array_equal(filled, ref)
        n_holes += int((ref != marker).any())
    assert n_holes > 30


def test_fg_groups_are_8_connected_components():
    rng = np.random.default_rng(11)
    for _ in range(100):
        h, w = (int(v) for v in rng.integers(1, 50, 2))
        fg = (rng.random((h, w)) < rng.uniform(0.1, 0.7)).astype(np.uint8)
        labels, members, start = label4_from_runs(fg, 0, *row_runs(fg))
        group, boxes = fg_groups(labels, start.shape[0] - 2, *row_runs(fg))
        ref, n = ndi.label(fg, structure=np.ones((3, 3)))
        ours = group[labels]
        # same partition: a one-to-one map between our groups and scipy's 8-connected components
        pairs = {(int(a), int(b)) for a, b in zip(ours[fg > 0], ref[fg > 0], strict=True)}
        assert len(pairs) == n == len({a for a, _ in pairs}) == len({b for _, b in pairs})
        for g in range(1, n + 1):
            ys, xs = np.nonzero(ours == g)
            assert tuple(boxes[g - 1]) == (ys.min(), xs.min(), ys.max() + 1, xs.max() + 1)


def test_measure_runs_and_seeds():
    rng = np.random.default_rng(12)
    for _ in range(60):
        h, w = (int(v) for v in rng.integers(1, 60, 2))
        fg = (rng.random((h, w)) < 0.5).astype(np.uint8)
        labels = np.where(fg > 0, rng.integers(0, 9, (h, w)), 0).astype(np.int32)
        tm = rng.integers(0, 6, (h, w)).astype(np.uint8)
        cut = rng.random(int(labels.max()) + 1) < 0.3
        a = measure_runs(labels, *row_runs(fg), tm, cut)
        b = measure_instances(labels, tm, 6, cut)
        for x, y in zip(a, b, strict=True):
            np.testing.assert_array_equal(x, y)
        markers = np.where(rng.random((h, w)) < 0.3, rng.integers(1, 7, (h, w)), 0).astype(np.int32)
        guide = ((markers > 0) | (rng.random((h, w)) < 0.2)).astype(np.uint8)  # covers the markers
        expect_cut = expected_cut(markers, fg)
        comps = ndi.label(fg)[0].astype(np.int32)  # 4-connected
        bounds = int(markers.max()), int(comps.max())
        seeds, cut, seeded, single = seeds_from_runs(markers, comps, *row_runs(guide), *bounds)
        np.testing.assert_array_equal(seeds, np.flatnonzero((markers > 0) & (fg > 0)))
        np.testing.assert_array_equal(cut, expect_cut)
        expect_seeded = np.zeros(int(markers.max()) + 1, bool)
        expect_seeded[np.unique(markers[(markers > 0) & (fg > 0)])] = True
        np.testing.assert_array_equal(seeded, expect_seeded)
        # the labels a watershed from those seeds can write are the seeded ones: measuring with them given
        # equals measuring with them found on the runs
        flooded = np.where(fg > 0, markers, 0) * expect_seeded[markers]
        a = measure_runs(flooded, *row_runs(fg), tm, cut)
        b = measure_present_into(flooded, *row_runs(fg), tm, cut, np.zeros_like(flooded), seeded)
        for x, y in zip(a, b, strict=True):
            np.testing.assert_array_equal(x, y)
        for cp in range(1, int(comps.max()) + 1):
            labs = np.unique(markers[(comps == cp) & (markers > 0)])
            expect = 0 if labs.size == 0 else (int(labs[0]) if labs.size == 1 else -1)
            assert (single[cp] if cp < single.shape[0] else 0) == expect, cp


def test_workspace_reused_across_tiles_and_after_an_error(monkeypatch):
    """The per-thread buffers (`workspace.py`) carry nothing from one tile to the next: tiles of one shape in
    a row, and a tile after one that raised half-way (buffers left written), give the whole-tile result."""
    rng = np.random.default_rng(7)
    tiles = [_tile(random_mix(rng, 192, 224, 120), s, noise=0.3, fg_flip=0.02) for s in range(3)]
    for tile in tiles:
        assert_same_as_whole_tile(monkeypatch, *tile)

    def fail(*args):
        raise RuntimeError("interrupted")

    with monkeypatch.context() as m:
        m.setattr(postprocess, "seeds_from_runs", fail)  # after the components and markers are written
        with pytest.raises(RuntimeError, match="interrupted"):
            PostProcessor().process_tile(*tiles[0])
    assert_same_as_whole_tile(monkeypatch, *tiles[1])
