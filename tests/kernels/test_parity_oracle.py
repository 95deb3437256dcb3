"""Cell-for-cell parity with the cellvit==1.0.9 tile post-processor (Oracle A) on generated tiles.

Every case asserts an identical instance map and identical cell fields; the last test prints the table
(PQ between the instance maps and the fraction of cells with identical fields).
"""

from __future__ import annotations

import zlib

import numpy as np
import pytest

from cellvit_trt.kernels import PostProcessor
from cellvit_trt.synthetic.targets import make_targets

from .agreement import FIELDS, field_agreement, panoptic_quality
from .oracle import run_oracle, softmax_inputs
from .real_shapes import mosaic, nucls_masks, scatter
from .synth_maps import N_TYPES, Maps, maps_from_instances, random_instances, random_mix

RESULTS: list[tuple[str, tuple, float, dict]] = []


def _maps_from_fg(rng, name, fg: np.ndarray, inst: np.ndarray, noise=0.1) -> Maps:
    """Maps whose foreground is exactly `fg` (strong logits) and whose HV come from `inst`."""
    h, w = fg.shape
    types = rng.integers(1, N_TYPES, size=int(inst.max()) + 1)
    t = make_targets(inst, types)
    s = rng.uniform(1.0, 3.0, (h, w))
    f = 2.0 * fg.astype(np.float64) - 1.0
    logits = np.stack([-f * s, f * s], -1)
    tl = rng.normal(0, 1.0, (h, w, N_TYPES))
    np.put_along_axis(tl, t.type_map[..., None].astype(np.int64), 3.0, -1)
    hv = t.hv + rng.normal(0, noise, t.hv.shape)
    return Maps(name, logits.astype(np.float32), tl.astype(np.float32), hv.astype(np.float16), inst)


def _case(name: str) -> Maps:
    rng = np.random.default_rng(zlib.crc32(name.encode()))
    if name == "isolated-256":
        return maps_from_instances(
            rng, name, random_instances(rng, 256, 256, 40, 3, 7, 0, overlap=False), noise=0.05
        )
    if name == "touching-overlapping-256":
        return maps_from_instances(rng, name, random_instances(rng, 256, 256, 220, 3, 9))
    if name == "noisy-256":
        inst = random_instances(rng, 256, 256, 120)
        return maps_from_instances(rng, name, inst, noise=0.45, blur=0.3, fg_flip=0.06)
    if name == "empty-256":
        return _maps_from_fg(rng, name, np.zeros((256, 256), np.uint8), np.zeros((256, 256), np.int32))
    if name == "all-foreground-256":
        inst = random_instances(rng, 256, 256, 300, 4, 10)
        return _maps_from_fg(rng, name, np.ones((256, 256), np.uint8), inst)
    if name == "constant-hv-256":
        inst = random_instances(rng, 256, 256, 60)
        m = maps_from_instances(rng, name, inst)
        m.hv[:] = 0
        return m
    if name == "size-limits-128":
        # foreground blobs of 8..12 px (blob limit 10) and bigger ones whose markers sit near the object limit
        fg = np.zeros((128, 128), np.uint8)
        inst = np.zeros((128, 128), np.int32)
        k = 0
        for i, size in enumerate([8, 9, 10, 11, 12, 9, 10, 11] * 2):
            r, c = 4 + (i // 4) * 14, 4 + (i % 4) * 14
            cells = [(r + j // 4, c + j % 4) for j in range(size)]
            k += 1
            for rr, cc in cells:
                fg[rr, cc] = 1
                inst[rr, cc] = k
        big = random_instances(rng, 128, 128, 40, 2.5, 6.0, 0)
        big[:64] = 0
        sel = big > 0
        fg[sel] = 1
        inst[sel] = big[sel] + k
        return _maps_from_fg(rng, name, fg, inst, noise=0.2)
    if name == "border-cut-256":
        return maps_from_instances(rng, name, random_instances(rng, 256, 256, 150, 4, 12, margin=12))
    if name == "non-square-200x320":
        return maps_from_instances(rng, name, random_instances(rng, 200, 320, 160))
    if name == "type-ties-256":
        inst = random_instances(rng, 256, 256, 150)
        return maps_from_instances(rng, name, inst, type_noise=2.0, type_quant=1.0)
    if name == "background-majority-256":
        inst = random_instances(rng, 256, 256, 150)
        return maps_from_instances(rng, name, inst, bg_type_frac=0.6, type_quant=0.5)
    if name == "float32-hv-256":
        m = maps_from_instances(rng, name, random_instances(rng, 256, 256, 150))
        m.hv = (m.hv.astype(np.float32) + rng.normal(0, 1e-3, m.hv.shape)).astype(
            np.float32
        )  # not float16-exact
        return m
    if name.startswith("random-mix-"):
        h, w = (int(v) for v in rng.integers(96, 200, 2))
        inst = random_mix(rng, h, w)
        return maps_from_instances(
            rng,
            name,
            inst,
            noise=rng.uniform(0, 0.5),
            blur=rng.uniform(0, 1.5),
            fg_flip=rng.uniform(0, 0.05),
            type_noise=rng.uniform(0.5, 2.5),
            type_quant=float(rng.choice([0.0, 0.5, 1.0])),
            bg_type_frac=rng.uniform(0, 0.7),
        )
    if name == "dense-1024":
        return maps_from_instances(rng, name, random_instances(rng, 1024, 1024, 2200, 3, 8))
    if name == "sparse-256":
        return maps_from_instances(rng, name, random_instances(rng, 256, 256, 30, 3, 8, 0), fg_flip=0.002)
    if name == "empty-tissue-256":  # background with isolated flipped pixels (all below the blob limit)
        return maps_from_instances(rng, name, np.zeros((256, 256), np.int32), fg_flip=0.003)
    if name == "reach-spacing-200x232":  # nuclei 7..22 px apart: around the Sobel reach and the run merging
        inst = np.zeros((200, 232), np.int32)
        yy, xx = np.mgrid[:200, :232]
        k, cy = 0, 6
        for gap in (7, 10, 11, 16, 17, 22):
            cx = 0
            while cx < 232:
                k += 1
                inst[((yy - cy) ** 2 + (xx - cx) ** 2 <= 36) & (inst == 0)] = k
                cx += 12 + gap
            cy += 12 + gap // 2
        return maps_from_instances(rng, name, inst, noise=0.1)
    if name == "many-blobs-256":
        # separated blobs around the foreground (10 px) and marker (10 px after the opening) limits
        return maps_from_instances(
            rng, name, random_instances(rng, 256, 256, 260, 2.4, 4.6, 4, overlap=False)
        )
    if name == "huge-blob-256":
        yy, xx = np.mgrid[:256, :256]
        inst = random_instances(rng, 256, 256, 30, 3, 7)
        inst[((yy - 150) ** 2 + (xx - 120) ** 2 <= 95**2) & ((yy - 150) ** 2 + (xx - 140) ** 2 > 9**2)] = 999
        return maps_from_instances(rng, name, inst, noise=0.2)
    if name == "rings-256":  # ring nuclei (marker holes), one nested in another, one cut by the border
        yy, xx = np.mgrid[:256, :256]
        inst = np.zeros((256, 256), np.int32)
        for k, (cy, cx, r_out, r_in) in enumerate([(60, 60, 22, 10), (150, 180, 16, 6), (0, 120, 18, 8)], 1):
            d = (yy - cy) ** 2 + (xx - cx) ** 2
            inst[(d <= r_out**2) & (d > r_in**2)] = k
        inst[(yy - 60) ** 2 + (xx - 60) ** 2 <= 25] = 4
        inst[random_instances(rng, 256, 256, 40, 3, 7) > 0] = 0
        return maps_from_instances(rng, name, inst, noise=0.08, blur=0.5)
    if name == "background-cliff-256":  # the tile-wide Sobel extremes lie far from every nucleus
        m = maps_from_instances(rng, name, random_instances(rng, 256, 256, 25, 3, 7, 0)[:, :128].copy())
        hv = np.zeros((2, 256, 256), np.float32)
        hv[:, :, :128] = m.hv.astype(np.float32)
        hv[0, :, 200:] = 0.45
        hv[1, 180:, 140:] = -0.4
        bl = np.zeros((256, 256, 2), np.float32)
        bl[..., 0] = 2.0
        bl[:, :128] = m.binary_logits
        tl = np.zeros((256, 256, N_TYPES), np.float32)
        tl[:, :128] = m.type_logits
        return Maps(name, bl, tl, hv.astype(np.float16), np.pad(m.gt_inst, ((0, 0), (0, 128))))
    if name.startswith("real-"):
        masks = nucls_masks()
        if masks is None:
            pytest.skip(f"{name}: shared/data/real/nucls15 not found (real nucleus shapes)")
        if name == "real-shapes-256":
            return maps_from_instances(rng, name, masks[7].copy())
        if name == "real-mosaic-200x384":  # non-square, nuclei cut at the tile border
            return maps_from_instances(rng, name, mosaic(masks, 1, 2)[30:230, 60:444].copy(), noise=0.2)
        if name == "real-sparse-1024":
            inst = scatter(masks, (1024, 1024), [(0, 20, 40), (5, 380, 700), (11, 760, 90), (14, 768, 768)])
            return maps_from_instances(rng, name, inst)
    raise KeyError(name)


CASES = [
    "isolated-256",
    "touching-overlapping-256",
    "noisy-256",
    "empty-256",
    "all-foreground-256",
    "constant-hv-256",
    "size-limits-128",
    "border-cut-256",
    "non-square-200x320",
    "type-ties-256",
    "background-majority-256",
    "float32-hv-256",
    *[f"random-mix-{i:02d}" for i in range(16)],
    "sparse-256",
    "empty-tissue-256",
    "reach-spacing-200x232",
    "many-blobs-256",
    "huge-blob-256",
    "rings-256",
    "background-cliff-256",
    "real-shapes-256",
    "real-mosaic-200x384",
    "real-sparse-1024",
    "dense-1024",
]


@pytest.fixture(scope="module")
def processor():
    return PostProcessor()


@pytest.mark.parametrize("name", CASES)
def test_parity_with_oracle(upstream, processor, name):
    maps = _case(name)
    d, fg, type_map, _ = softmax_inputs(maps)
    o_inst, o_cells = run_oracle(upstream, d)
    ours = processor.process_tile(fg, maps.hv, type_map)
    pq = panoptic_quality(ours.inst_map, o_inst)
    agree = field_agreement(ours.cells.to_upstream_dict(), o_cells)
    RESULTS.append((name, fg.shape, pq, agree))
    np.testing.assert_array_equal(ours.inst_map, o_inst)
    assert pq == 1.0
    for f in FIELDS:
        assert agree[f] == 1.0, (f, agree)
    # the table keeps upstream's ascending-id order and only non-background cells
    assert np.all(np.diff(ours.cells.id) > 0)
    assert not np.any(ours.cells.type == 0)
    if name in ("empty-256", "empty-tissue-256"):
        assert len(ours.cells) == 0 and ours.inst_map.max() == 0
    if name == "background-majority-256":
        # the background-second rule fired: cells whose winning type covers under half of their pixels
        assert (ours.cells.type_prob < 0.5).any()


def test_batch_equals_tiles(processor):
    tiles = [_case("isolated-256"), _case("type-ties-256")]
    ins = [softmax_inputs(m) for m in tiles]
    fg = np.stack([x[1] for x in ins])
    tm = np.stack([x[2] for x in ins])
    hv = np.stack([m.hv for m in tiles])
    batch = processor.process_batch(fg, hv, tm, workers=2)
    for i, m in enumerate(tiles):
        one = processor.process_tile(fg[i], m.hv, tm[i])
        np.testing.assert_array_equal(batch[i].inst_map, one.inst_map)
        assert batch[i].cells.to_upstream_dict().keys() == one.cells.to_upstream_dict().keys()


def test_float_probability_input_matches_argmax(processor):
    maps = _case("touching-overlapping-256")
    _, fg, type_map, p = softmax_inputs(maps)
    agree = (p > 0.5) == (fg == 1)
    assert agree.mean() > 0.999  # rounding of the softmax pair may differ on exact 0.5 ties only
    fg_p = np.where(agree, p, np.where(fg == 1, 0.75, 0.25)).astype(np.float32)
    a = processor.process_tile(fg_p, maps.hv, type_map)
    b = processor.process_tile(fg, maps.hv, type_map)
    np.testing.assert_array_equal(a.inst_map, b.inst_map)


def test_zz_parity_summary(capsys):
    """Prints the parity table (runs last in this module)."""
    assert RESULTS, "no parity case ran"
    lines = [
        "",
        "Parity with cellvit==1.0.9 DetectionCellPostProcessor (identical-field fractions over cells)",
        f"{'case':28s} {'shape':>11s} {'cells':>6s} {'PQ':>6s} " + " ".join(f"{f:>9s}" for f in FIELDS),
    ]
    for name, shape, pq, agree in RESULTS:
        lines.append(
            f"{name:28s} {str(shape[0]) + 'x' + str(shape[1]):>11s} {agree['cells']:6d} {pq:6.3f} "
            + " ".join(f"{agree[f]:9.3f}" for f in FIELDS)
        )
    total = sum(a["cells"] for _, _, _, a in RESULTS)
    lines.append(f"{'all':28s} {'':>11s} {total:6d} {min(r[2] for r in RESULTS):6.3f} (min PQ)")
    with capsys.disabled():
        print("\n".join(lines))
    assert all(r[2] == 1.0 for r in RESULTS)
