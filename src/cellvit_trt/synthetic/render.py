"""Render a window of a `World`: RGB image and exact instance ground truth.

Overlaps are resolved by z-order: a nucleus drawn later covers earlier ones in the label map, while the image
shows the summed stain (overlaps look darker, as in tissue). A nucleus less than 55 % visible, or with fewer
than `min_area` visible pixels, is not drawn at all; the parts of an occluded nucleus cut off from its main
visible body are not drawn either, so every ground-truth instance is one connected region.

Windows agree: every decision for a nucleus depends only on nuclei that overlap it, and those on nuclei that
overlap them, and so on. The window is rendered on a canvas with a halo of 5 nucleus reaches, from the nuclei
within 6 reaches, so labels and pixels of a window do not depend on where the canvas stops unless a chain of
more than four mutually overlapping nuclei crosses the halo (not seen in practice; the tests check windows).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from cellvit_trt.synthetic import fields
from cellvit_trt.synthetic.morphology import DEAD, MAX_EXTENT_40X, Nuclei, extent, rasterise, stain_profile
from cellvit_trt.synthetic.stain import compose_rgb
from cellvit_trt.synthetic.world import (
    GLAND,
    GLAND_MAX_REACH,
    GLASS,
    INFILTRATE,
    S_COARSE,
    S_FIBRE,
    S_FINE,
    S_MOTTLE,
    S_SENSOR,
    S_STAIN_VAR_E,
    S_STAIN_VAR_H,
    TUMOUR,
    Glands,
    World,
    compartment_map,
    glands_in,
    normal_quantile,
    nuclei_in,
    orientation_map,
)

MIN_VISIBLE_FRACTION = 0.55
MIN_AREA_40X = 14.0  # px at 40x (post-processing removes objects under 10 px)


@dataclass
class Window:
    """A rendered window. `label` holds indices into `nuclei` (-1 = background)."""

    image: np.ndarray  # uint8 [h, w, 3]
    label: np.ndarray  # int32 [h, w]
    nuclei: Nuclei
    tissue: np.ndarray  # bool [h, w]: tissue (not glass)


def _blur_std(sigma: float) -> float:
    # std of Gaussian-blurred unit white noise in 2-D
    return 1.0 / (2.0 * math.sqrt(math.pi) * sigma)


def _line_kernel(length: int, angle: float) -> np.ndarray:
    k = np.zeros((length, length), np.float32)
    c = (length - 1) / 2.0
    dx, dy = math.cos(angle) * c, math.sin(angle) * c
    cv2.line(
        k,
        (round((c - dx) * 16), round((c - dy) * 16)),
        (round((c + dx) * 16), round((c + dy) * 16)),
        1.0,
        1,
        cv2.LINE_AA,
        4,
    )
    return k / max(float(np.sqrt((k * k).sum())), 1e-6)


def _fibres(world: World, y0: int, x0: int, h: int, w: int) -> np.ndarray:
    """Fibrillar stroma texture in [0, 1]: noise smeared along the local fibre direction."""
    s = world.scale
    noise = fields.white_noise(world.seed, S_FIBRE, y0, x0, h, w)
    sig = max(1.1 * s, 0.6)
    noise = cv2.GaussianBlur(noise, (0, 0), sig) / np.float32(_blur_std(sig))
    theta = orientation_map(world, y0, x0, h, w)
    length = max(int(round(27 * s)) | 1, 5)
    acc = np.zeros((h, w), np.float32)
    wsum = np.zeros((h, w), np.float32)
    for phi in (0.0, math.pi / 4, math.pi / 2, 3 * math.pi / 4):
        wk = np.maximum(np.cos(2 * (theta - phi)), 0).astype(np.float32) ** 2
        acc += wk * cv2.filter2D(noise, -1, _line_kernel(length, phi), borderType=cv2.BORDER_REFLECT)
        wsum += wk
    f = acc / np.maximum(wsum, 1e-3)
    return 0.5 + 0.5 * np.tanh(1.1 * f)


def _glands_eosin(world: World, glands: Glands, y0: int, x0: int, h: int, w: int, e: np.ndarray) -> None:
    """Cytoplasm rim and pale lumen of glands, solid pink nests."""
    s = world.scale
    for i in range(len(glands)):
        reach = max(glands.rx[i], glands.ry[i]) + 4
        r0, r1 = max(int(glands.cy[i] - reach) - y0, 0), min(int(glands.cy[i] + reach) + 1 - y0, h)
        c0, c1 = max(int(glands.cx[i] - reach) - x0, 0), min(int(glands.cx[i] + reach) + 1 - x0, w)
        if r0 >= r1 or c0 >= c1:
            continue
        ys = np.arange(r0 + y0, r1 + y0, dtype=np.float64)[:, None]
        xs = np.arange(c0 + x0, c1 + x0, dtype=np.float64)[None, :]
        rn = glands.radius_norm(i, ys, xs)
        sub = e[r0:r1, c0:c1]
        if glands.nest[i]:
            sub[rn <= 1.0] = 0.5
        else:
            rim = 1.0 - 40.0 * s / max(glands.rx[i], glands.ry[i])
            sub[rn <= 1.0] = 0.58
            sub[rn <= rim] = 0.05


def render_window(world: World, y0: int, x0: int, h: int, w: int) -> Window:
    """Image and labels of the window [y0, y0+h) x [x0, x0+w) in global pixels."""
    s = world.scale
    reach = MAX_EXTENT_40X * s
    halo = int(math.ceil(5 * reach)) + 8
    cy0, cx0, ch, cw = y0 - halo, x0 - halo, h + 2 * halo, w + 2 * halo

    # stain is rendered on the window plus a margin that covers the optical blur and the texture filters
    pm = int(math.ceil(32 * s)) + 8
    py0, px0, ph, pw = y0 - pm, x0 - pm, h + 2 * pm, w + 2 * pm
    comp, tfield = compartment_map(world, py0, px0, ph, pw)
    gm = GLAND_MAX_REACH * s + 6 * reach
    glands = glands_in(world, cy0 - gm, cx0 - gm, cy0 + ch + gm, cx0 + cw + gm)
    nuc = nuclei_in(world, y0 - 6 * reach, x0 - 6 * reach, y0 + h + 6 * reach, x0 + w + 6 * reach, glands)
    order = np.argsort(nuc.z, kind="stable")
    nuc = nuc.select(order)
    n = len(nuc)
    ext = extent(nuc)

    # pass 1: who is visible enough (every candidate counts as an occluder)
    rasters = [rasterise(nuc, i, ext[i]) for i in range(n)]
    lab = np.full((ch, cw), -1, np.int32)
    full_area = np.zeros(n, np.int64)
    for i, (r0, c0, m, _) in enumerate(rasters):
        full_area[i] = int(m.sum())
        _paint_label(lab, r0 - cy0, c0 - cx0, m, i)
    vis = np.bincount(lab[lab >= 0], minlength=n)
    min_area = MIN_AREA_40X * s * s
    keep = (vis >= MIN_VISIBLE_FRACTION * np.maximum(full_area, 1)) & (vis >= min_area)

    # pass 2: kept nuclei only; cut off the parts of an occluded nucleus that are separated from its body
    lab.fill(-1)
    for i in np.nonzero(keep)[0]:
        r0, c0, m, _ = rasters[i]
        _paint_label(lab, r0 - cy0, c0 - cx0, m, i)
    paint = {}
    for i in np.nonzero(keep)[0]:
        r0, c0, m, rr = rasters[i]
        view, sl = _crop(lab, r0 - cy0, c0 - cx0, m)
        if view is None:
            continue
        visible = view == i
        mm = m[sl]
        if visible.sum() < mm.sum():
            nlab, cc, stats, _ = cv2.connectedComponentsWithStats(visible.astype(np.uint8), connectivity=4)
            if nlab > 2:
                big = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
                mm = mm & ~((cc > 0) & (cc != big))
        paint[i] = (sl, mm)
    lab.fill(-1)
    for i in np.nonzero(keep)[0]:
        if i in paint:
            r0, c0, _, _ = rasters[i]
            sl, mm = paint[i]
            sub = lab[
                r0 - cy0 + sl[0].start : r0 - cy0 + sl[0].stop, c0 - cx0 + sl[1].start : c0 - cx0 + sl[1].stop
            ]
            sub[mm] = i
    # an instance uncovered in pass 2 may have come apart: keep its largest 4-connected piece
    for i in list(paint):
        r0, c0, _, _ = rasters[i]
        view, sl = _crop(lab, r0 - cy0, c0 - cx0, rasters[i][2])
        mine = view == i
        if not mine.any():
            continue
        nlab, cc, stats, _ = cv2.connectedComponentsWithStats(mine.view(np.uint8), connectivity=4)
        if nlab > 2:
            big = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
            cut = (cc > 0) & (cc != big)
            view[cut] = -1
            sl_, mm = paint[i]
            mm = mm & ~cut  # the cut pieces are neither labelled nor stained
            paint[i] = (sl_, mm)
    area = np.bincount(lab[lab >= 0], minlength=n)
    small = (area > 0) & (area < min_area)
    # hematoxylin: summed profiles of the drawn nuclei, plus a faint background in tissue
    fine = fields.white_noise(world.seed, S_FINE, py0, px0, ph, pw)
    fine = cv2.GaussianBlur(fine, (0, 0), 0.8) / np.float32(_blur_std(0.8))
    coarse = fields.white_noise(world.seed, S_COARSE, py0, px0, ph, pw)
    coarse = cv2.GaussianBlur(coarse, (0, 0), 1.8 * s) / np.float32(_blur_std(1.8 * s))
    tissue = comp != GLASS
    mottle = fields.smooth_field(world.seed, S_MOTTLE, py0, px0, ph, pw, world.px(3.0))
    hem = np.where(tissue, 0.06 + 0.02 * mottle, 0.0).astype(np.float32)
    hem[comp == TUMOUR] += 0.06
    for i, (sl, mm) in paint.items():
        if small[i]:
            continue
        r0, c0, _, rr = rasters[i]
        gy, gx = r0 + sl[0].start - py0, c0 + sl[1].start - px0  # box origin in the stain canvas
        hh, ww = mm.shape
        ya, yb, xa, xb = max(gy, 0), min(gy + hh, ph), max(gx, 0), min(gx + ww, pw)
        if ya >= yb or xa >= xb:
            continue
        box = (
            slice(ya - gy + sl[0].start, yb - gy + sl[0].start),
            slice(xa - gx + sl[1].start, xb - gx + sl[1].start),
        )
        prof = stain_profile(nuc, i, ya + py0, xa + px0, rr[box], fine[ya:yb, xa:xb], coarse[ya:yb, xa:xb])
        hem[ya:yb, xa:xb] += np.where(mm[ya - gy : yb - gy, xa - gx : xb - gx], prof, 0.0)

    eos = _eosin(world, comp, tfield, glands, nuc, keep & ~small, py0, px0, ph, pw)
    # slow stain unevenness across the slide
    hem *= 1.0 + 0.1 * fields.smooth_field(world.seed, S_STAIN_VAR_H, py0, px0, ph, pw, world.px(150.0))
    eos *= 1.0 + 0.12 * fields.smooth_field(world.seed, S_STAIN_VAR_E, py0, px0, ph, pw, world.px(150.0))

    noise = np.stack([fields.white_noise(world.seed, S_SENSOR + k, y0, x0, h, w) for k in range(3)], axis=-1)
    image = compose_rgb(hem, eos, world.stain, noise=noise, margin=pm)
    core = lab[halo : halo + h, halo : halo + w]
    return Window(
        image=image,
        label=np.ascontiguousarray(core),
        nuclei=nuc,
        tissue=np.ascontiguousarray(tissue[pm : pm + h, pm : pm + w]),
    )


def _eosin(
    world: World,
    comp: np.ndarray,
    tfield: np.ndarray,
    glands: Glands,
    nuc: Nuclei,
    drawn: np.ndarray,
    y0: int,
    x0: int,
    h: int,
    w: int,
) -> np.ndarray:
    fib = _fibres(world, y0, x0, h, w)
    mottle = fields.smooth_field(world.seed, S_MOTTLE + 50, y0, x0, h, w, world.px(4.0))
    e = (0.22 + 0.5 * fib).astype(np.float32)
    e[fib < 0.22] *= 0.5  # loose stroma: pale gaps between fibre bundles
    tum = comp == TUMOUR
    e[tum] = 0.42 + 0.08 * mottle[tum]
    inf = comp == INFILTRATE
    e[inf] = 0.22 + 0.25 * fib[inf]
    if (comp == GLAND).any():
        _glands_eosin(world, glands, y0, x0, h, w, e)
    # dead cells: hypereosinophilic shrunken cytoplasm around the pyknotic nucleus
    for i in np.nonzero(drawn & (nuc.type == DEAD))[0]:
        r = 2.2 * nuc.a[i]
        cy, cx = nuc.cy[i] - y0, nuc.cx[i] - x0
        r0, r1 = max(int(cy - r), 0), min(int(cy + r) + 2, h)
        c0, c1 = max(int(cx - r), 0), min(int(cx + r) + 2, w)
        if r0 >= r1 or c0 >= c1:
            continue
        d = np.hypot(np.arange(r0, r1)[:, None] - cy, np.arange(c0, c1)[None, :] - cx) / r
        e[r0:r1, c0:c1] += np.clip(1.2 - d, 0, 1).astype(np.float32) * 0.45
    # soft tissue edge towards the glass
    if world.glass_fraction > 0:
        edge = np.clip((tfield - normal_quantile(world.glass_fraction)) * 6.0, 0.0, 1.0)
        e *= edge
    return e


def _crop(lab: np.ndarray, r0: int, c0: int, m: np.ndarray):
    """View of `lab` under mask box at (r0, c0), clipped to the canvas, and the matching slice of the mask."""
    h, w = lab.shape
    mh, mw = m.shape
    ra, rb = max(r0, 0), min(r0 + mh, h)
    ca, cb = max(c0, 0), min(c0 + mw, w)
    if ra >= rb or ca >= cb:
        return None, None
    sl = (slice(ra - r0, rb - r0), slice(ca - c0, cb - c0))
    return lab[ra:rb, ca:cb], sl


def _paint_label(lab: np.ndarray, r0: int, c0: int, m: np.ndarray, value: int) -> None:
    view, sl = _crop(lab, r0, c0, m)
    if view is not None:
        view[m[sl]] = value
