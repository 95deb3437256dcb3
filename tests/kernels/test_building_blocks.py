"""Each Numba building block against the library call it replaces (bit-exact), including tie-heavy inputs."""

from __future__ import annotations

import platform

import cv2
import numpy as np
import pytest
from numba import njit
from scipy import ndimage as ndi
from skimage.segmentation import watershed

from cellvit_trt.kernels.cells import measure_runs
from cellvit_trt.kernels.contours import trace_first_contours
from cellvit_trt.kernels.halfs import as_f32, half_extremes
from cellvit_trt.kernels.layout import row_runs
from cellvit_trt.kernels.morphology import fill_holes4, label4_components, label4_filtered
from cellvit_trt.kernels.opening import numba_opening_ok, open_ellipse_binary
from cellvit_trt.kernels.radix_flood import order_key
from cellvit_trt.kernels.rank_flood import sort_by_key
from cellvit_trt.kernels.replicas import gaussian_taps
from cellvit_trt.kernels.sobel import sobel, sobel_x, sobel_y, use_numba_sobel
from cellvit_trt.kernels.watershed import (
    seeds_from_runs,
    watershed_fast,
    watershed_masked,
    watershed_seeded_into,
)

from .reference import expected_cut


def _remove_small(lab, min_size):
    sizes = np.bincount(lab.ravel())
    lab = lab.copy()
    lab[(sizes < min_size)[lab]] = 0
    return lab


def test_label_and_fill_holes_match_scipy():
    rng = np.random.default_rng(0)
    for _ in range(150):
        h, w = rng.integers(1, 50, 2)
        b = (rng.random((h, w)) < rng.uniform(0.1, 0.9)).astype(np.uint8)
        ms = int(rng.integers(0, 8))
        ref = _remove_small(ndi.label(b)[0], ms)
        np.testing.assert_array_equal(label4_filtered(b, ms), ref)
        labels, members, start = label4_components(b, ms)
        for k in range(1, start.shape[0] - 1):
            pix = np.sort(members[start[k] : start[k + 1]])
            np.testing.assert_array_equal(pix, np.flatnonzero(ref.ravel() == k))
        np.testing.assert_array_equal(fill_holes4(b), ndi.binary_fill_holes(b))


def test_watershed_matches_skimage_with_ties():
    rng = np.random.default_rng(1)
    holes = 0
    for it in range(400):
        h, w = rng.integers(3, 60, 2)
        kind = it % 3
        if kind == 0:  # integer relief: massive ties, also among markers of one component
            img = rng.integers(0, int(rng.integers(1, 5)), (h, w)).astype(np.float64)
        elif kind == 1:
            img = rng.random((h, w))
        else:
            img = np.round(rng.random((h, w)) * 40) / 40
        mask = (rng.random((h, w)) < rng.uniform(0.4, 1.0)).astype(np.uint8)
        comps = label4_components(mask, int(rng.integers(0, 4)))
        mask = (comps[0] > 0).astype(np.uint8)
        markers = label4_filtered((rng.random((h, w)) < rng.uniform(0.02, 0.4)).astype(np.uint8), 0)
        if it % 4 == 3:  # blobs over a mask with pinholes inside them (some of two pixels), or anywhere
            markers = label4_filtered(ndi.binary_closing(markers > 0, iterations=2).astype(np.uint8), 0)
            inner = ndi.binary_erosion(markers > 0) & (rng.random((h, w)) < 0.03)
            pairs = np.roll(inner, 1, axis=1) & (rng.random((h, w)) < 0.5) & (markers > 0)
            mask = ~(inner | pairs) & ((rng.random((h, w)) > 0.02) | (it % 8 == 3))
            comps = label4_components(mask.astype(np.uint8), 0)
            mask = (comps[0] > 0).astype(np.uint8)
        ref = watershed(img, markers=markers, mask=mask.astype(bool))
        exact, cut_a = watershed_masked(img, markers, mask)
        fast, cut_b = watershed_fast(img, markers, *comps)
        np.testing.assert_array_equal(exact, ref)
        np.testing.assert_array_equal(fast, ref)
        np.testing.assert_array_equal(cut_a, cut_b)
        np.testing.assert_array_equal(cut_b, expected_cut(markers, mask))
        for lab in np.unique(fast[fast > 0]):  # what the flag promises: an unflagged region is one piece
            if not cut_b[lab]:
                assert ndi.label(fast == lab, structure=np.ones((3, 3)))[1] == 1
        holes += int(((markers > 0) & (mask == 0)).sum()) - int(cut_b.sum())
    assert holes > 100  # the hole exemption was exercised


def test_watershed_ties_off_the_markers_match_skimage():
    """Equal values among unlabelled pixels, and shared between them and markers, but never between two
    markers: the watershed floods every component on sorted ranks (`rank_flood`), through its tie blocks."""
    rng = np.random.default_rng(5)
    tied_free = 0
    for it in range(300):
        h, w = rng.integers(3, 60, 2)
        levels = int(rng.integers(1, 12))
        img = np.round(rng.random((h, w)) * levels) / levels
        mask = (rng.random((h, w)) < rng.uniform(0.5, 1.0)).astype(np.uint8)
        comps = label4_components(mask, 0)
        mask = (comps[0] > 0).astype(np.uint8)
        markers = label4_filtered((rng.random((h, w)) < rng.uniform(0.02, 0.3)).astype(np.uint8), 0)
        if it % 2:  # blobs: long fronts between regions
            markers = label4_filtered(ndi.binary_closing(markers > 0, iterations=2).astype(np.uint8), 0)
        mk = markers > 0
        grid = rng.permutation(max(int(mk.sum()), 4 * levels + 1))[: int(mk.sum())]
        img[mk] = grid / (4 * levels)  # pairwise distinct; every fourth one on a free pixel's level
        ref = watershed(img, markers=markers, mask=mask.astype(bool))
        np.testing.assert_array_equal(watershed_fast(img, markers, *comps)[0], ref)
        free = (mask > 0) & ~mk
        tied_free += int(free.sum()) - np.unique(img[free]).size
    assert tied_free > 10_000  # the tie blocks were exercised


def test_watershed_blurs_where_it_reads():
    """`watershed_seeded_into` given dist instead of the relief (`lazy`) labels as with the whole relief,
    with and without the tie replay (which reads every component)."""
    rng = np.random.default_rng(11)
    taps = gaussian_taps(3)
    replays = 0
    for it in range(200):
        h, w = rng.integers(3, 50, 2)
        dist = rng.integers(0, 3, (h, w)).astype(np.float64) if it % 2 else rng.random((h, w))
        mask = (rng.random((h, w)) < rng.uniform(0.5, 1.0)).astype(np.uint8)
        comps = label4_components(mask, 0)
        components = comps[0]
        markers = label4_filtered((rng.random((h, w)) < rng.uniform(0.02, 0.3)).astype(np.uint8), 0)
        relief = -cv2.GaussianBlur(dist * (components > 0), (3, 3), 0)
        runs = row_runs((markers != 0).view(np.uint8))
        bounds = markers.max(), comps[2].shape[0] - 2
        seeds, _, _, single = seeds_from_runs(markers, components, *runs, *bounds)
        full = np.zeros((h, w), np.int32)
        watershed_seeded_into(relief, markers, seeds, single, *comps, full)
        lazy = np.zeros((h, w), np.int32)
        watershed_seeded_into(np.full((h, w), np.nan), markers, seeds, single, *comps, lazy, (dist, taps))
        np.testing.assert_array_equal(lazy, full)
        np.testing.assert_array_equal(full, watershed(relief, markers=markers, mask=components > 0))
        replays += it % 2
    assert replays > 50


def test_sort_by_key_any_keys():
    """`rank_flood.sort_by_key` on spread, full-range, duplicated and clustered keys (crowded buckets)."""
    rng = np.random.default_rng(9)
    for n in (0, 1, 2, 7, 33, 100, 1000, 5000):
        for kind in range(4):
            if kind == 0:
                keys = rng.integers(-(2**63), 2**63 - 1, n, dtype=np.int64)
            elif kind == 1:
                keys = np.array([order_key(int(b)) for b in (-rng.random(n)).view(np.int64)], np.int64)
            elif kind == 2:  # all but one within 1,000 of each other: one crowded bucket
                keys = rng.integers(0, 1000, n).astype(np.int64)
                keys[: min(n, 1)] = 2**62
            else:
                keys = rng.integers(-3, 3, n).astype(np.int64)
            skey, spix = np.empty(n, np.int64), np.empty(n, np.int64)
            sort_by_key(keys, np.arange(n, dtype=np.int64), skey, spix, np.empty(2 * n + 1, np.int64))
            np.testing.assert_array_equal(skey, np.sort(keys))
            np.testing.assert_array_equal(keys[spix], skey)
            assert np.unique(spix).size == n


@pytest.mark.parametrize("ksize", [21, 11, 7])
@pytest.mark.parametrize("shape", [(64, 96), (300, 37), (12, 15)])
def test_sobel_bit_exact(ksize, shape):
    rng = np.random.default_rng(ksize)
    src = rng.random(shape).astype(np.float32)
    if shape[0] == 64:
        src = np.round(src * 8) / 8  # quantised values: many equal partial sums
    ref_x = cv2.Sobel(src, cv2.CV_64F, 1, 0, ksize=ksize)
    ref_y = cv2.Sobel(src, cv2.CV_64F, 0, 1, ksize=ksize)
    # what the pipeline uses is always identical to OpenCV (Numba where proven identical, else OpenCV)
    np.testing.assert_array_equal(sobel(src, 1, ksize), ref_x)
    np.testing.assert_array_equal(sobel(src, 0, ksize), ref_y)
    if platform.machine().lower() in ("x86_64", "amd64"):
        # OpenCV's x86 builds dispatch to AVX2/FMA code, which the Numba filter reproduces bit for bit
        assert use_numba_sobel(ksize)
        np.testing.assert_array_equal(sobel_x(src, ksize), ref_x)
        np.testing.assert_array_equal(sobel_y(src, ksize), ref_y)


def test_contours_match_opencv_first_contour():
    rng = np.random.default_rng(2)
    for it in range(600):
        h, w = rng.integers(1, 14, 2)
        m = (rng.random((h, w)) < rng.uniform(0.3, 0.95)).astype(np.uint8)
        if it % 2 and h > 2 and w > 2:
            m = ndi.binary_closing(m).astype(np.uint8)
        lab = ndi.label(m, structure=np.ones((3, 3)))[0]
        if lab.max() == 0:
            continue
        sizes = np.bincount(lab.ravel())
        sizes[0] = 0
        comp = lab == sizes.argmax()  # one 8-connected component, holes allowed
        tile = rng.integers(0, 3, (h + 6, w + 6)).astype(np.int32) * 5
        tile[3 : 3 + h, 3 : 3 + w] = np.where(
            comp, 7, np.where(tile[3 : 3 + h, 3 : 3 + w] == 7, 0, tile[3 : 3 + h, 3 : 3 + w])
        )
        ys, xs = np.nonzero(tile == 7)
        r0, c0 = ys.min(), xs.min()
        crop = (tile[r0 : ys.max() + 1, c0 : xs.max() + 1] == 7).astype(np.uint8)
        ref = cv2.findContours(crop, cv2.RETR_TREE, cv2.CHAIN_APPROX_SIMPLE)[0][0].reshape(-1, 2) + [c0, r0]
        pts, _ = trace_first_contours(tile, np.array([7]), np.array([xs[0]]), np.array([ys[0]]))
        np.testing.assert_array_equal(pts, ref)


@njit
def _decode_halves(bits, out):
    for i in range(bits.shape[0]):
        out[i] = as_f32(bits[i])


def test_halves_decoded_exactly_and_counted():
    """`as_f32` (how the kernels read float16 HV) gives NumPy's float32 for every half; `half_extremes`
    counts the inf/NaN ones."""
    halves = np.arange(65536, dtype=np.uint32).astype(np.uint16).view(np.float16)
    ours = np.empty(halves.shape, np.float32)
    _decode_halves(halves.view(np.uint16), ours)
    ref = halves.astype(np.float32)
    finite = np.isfinite(ref)
    np.testing.assert_array_equal(ours[finite].view(np.uint32), ref[finite].view(np.uint32))
    np.testing.assert_array_equal(np.isnan(ours), np.isnan(ref))
    np.testing.assert_array_equal(np.isinf(ours), np.isinf(ref))
    assert half_extremes(halves)[0] == int((~finite).sum())


def test_half_extremes_per_plane():
    """The per-plane (min, max) found on the half bits are NumPy's, for planes holding any finite halves
    (negative ones, subnormals, zeros of both signs, +-65504 included)."""
    rng = np.random.default_rng(21)
    every = np.arange(65536, dtype=np.uint32).astype(np.uint16).view(np.float16)
    finite = every[np.isfinite(every)]
    for _ in range(200):
        n, h, w = (int(v) for v in rng.integers(1, 9, 3))
        pools = (finite, finite[np.abs(finite) < 1e-4], finite[finite <= 0], finite[finite >= 0])
        pool = pools[int(rng.integers(0, len(pools)))]
        arr = rng.choice(pool, (n, 2, h, w))
        bad, ext = half_extremes(arr)
        assert bad == 0 and ext.shape == (n, 2, 2)
        ref = arr.astype(np.float32)
        np.testing.assert_array_equal(ext[..., 0], ref.min(axis=(2, 3)))  # -0.0 == 0.0: either may come back
        np.testing.assert_array_equal(ext[..., 1], ref.max(axis=(2, 3)))


def _runs_cut_at_random(fg: np.ndarray, rng) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Row runs covering fg's pixels, some cut in two where they touch (runs need not be maximal)."""
    ptr, c0s, c1s = [0], [], []
    for row in fg:
        c = 0
        while c < row.size:
            if not row[c]:
                c += 1
                continue
            e = c
            while e < row.size and row[e]:
                e += 1
            cuts = sorted({int(x) for x in rng.integers(c + 1, e + 1, 2)} | {c, e}) if e - c > 1 else [c, e]
            c0s += cuts[:-1]
            c1s += cuts[1:]
            c = e
        ptr.append(len(c0s))
    return np.array(ptr, np.int64), np.array(c0s, np.int64), np.array(c1s, np.int64)


def test_measure_flags_instances_in_pieces():
    """`split` is True exactly for the cut instances in several 8-connected pieces (runs touching end to
    start included); the single-piece ones get OpenCV's first contour."""
    rng = np.random.default_rng(3)
    n_pieces = n_whole = 0
    for _ in range(300):
        h, w = (int(v) for v in rng.integers(2, 14, 2))
        tile = np.zeros((h + 4, w + 4), np.int32)
        body = tile[2 : 2 + h, 2 : 2 + w]
        for lab in (9, 4, 6):  # later labels paint over earlier ones
            body[rng.random((h, w)) < rng.uniform(0.1, 0.5)] = lab
        cut = np.zeros(10, np.bool_)
        cut[[9, 4]] = True  # 6 is never flagged, whatever its shape
        runs = _runs_cut_at_random(tile > 0, rng)
        measured = measure_runs(tile, *runs, np.zeros(tile.shape, np.uint8), cut)
        inst, split, first_x, first_y = measured[0], measured[9], measured[7], measured[8]
        present = np.unique(tile[tile > 0])
        for new_id, lab in enumerate(present, start=1):
            several = ndi.label(tile == lab, structure=np.ones((3, 3)))[1] > 1
            assert bool(split[new_id - 1]) == (several and bool(cut[lab])), (lab, tile)
            n_pieces += several and bool(cut[lab])
        whole = np.flatnonzero(~split)
        pts, off = trace_first_contours(inst, whole + 1, first_x[whole], first_y[whole])
        for k, i in enumerate(whole):
            ys, xs = np.nonzero(inst == i + 1)
            crop = (inst[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1] == i + 1).astype(np.uint8)
            if ndi.label(crop, structure=np.ones((3, 3)))[1] > 1:
                continue  # in pieces but never cut: not the contour tracer's case
            ref = cv2.findContours(crop, cv2.RETR_TREE, cv2.CHAIN_APPROX_SIMPLE)[0][0].reshape(-1, 2)
            np.testing.assert_array_equal(pts[off[k] : off[k + 1]], ref + [xs.min(), ys.min()])
            n_whole += 1
    assert n_pieces > 50 and n_whole > 50


def test_binary_opening_matches_opencv():
    """The Numba marker opening equals cv2.morphologyEx(MORPH_OPEN, ellipse) on 0/1 maps: size 5 (upstream's),
    the OpenCV fallback for the others, maps from 1 pixel to 70 across, sparse to full."""
    assert numba_opening_ok()
    rng = np.random.default_rng(5)
    for size in (1, 2, 3, 4, 5, 6, 7, 9):
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (size, size))
        for _ in range(40):
            h, w = (int(v) for v in rng.integers(1, 71, 2))
            x = (rng.random((h, w)) < rng.choice([0.05, 0.5, 0.8, 0.97, 1.0])).astype(np.uint8)
            expect = cv2.morphologyEx(x, cv2.MORPH_OPEN, kernel)
            out = np.full((h, w), 7, np.uint8)  # any contents: fully written
            got = open_ellipse_binary(x, size, out)
            np.testing.assert_array_equal(got, expect, err_msg=f"size {size}, {h}x{w}")
            np.testing.assert_array_equal(open_ellipse_binary(x, size), expect)
