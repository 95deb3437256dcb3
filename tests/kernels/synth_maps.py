"""Generated network-like maps for the parity battery: instance maps -> HoVer targets -> noisy logits."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.ndimage import gaussian_filter

from cellvit_trt.synthetic.targets import make_targets

N_TYPES = 6


@dataclass
class Maps:
    name: str
    binary_logits: np.ndarray  # float32 [H, W, 2]
    type_logits: np.ndarray  # float32 [H, W, 6]
    hv: np.ndarray  # float16 [2, H, W] (what the deployment graph ships)
    gt_inst: np.ndarray  # int32 [H, W]


def random_instances(rng, h, w, n, rmin=2.0, rmax=9.0, margin=6.0, overlap=True) -> np.ndarray:
    """Elliptic nuclei at random (possibly overlapping, possibly cut by the border) positions."""
    inst = np.zeros((h, w), np.int32)
    label = 0
    for _ in range(n):
        cy, cx = rng.uniform(-margin, h + margin), rng.uniform(-margin, w + margin)
        ry, rx = rng.uniform(rmin, rmax, size=2)
        th = rng.uniform(0, np.pi)
        r0, r1 = int(max(0, cy - rmax - 1)), int(min(h, cy + rmax + 2))
        c0, c1 = int(max(0, cx - rmax - 1)), int(min(w, cx + rmax + 2))
        if r1 <= r0 or c1 <= c0:
            continue
        yy, xx = np.mgrid[r0:r1, c0:c1]
        dy, dx = yy - cy, xx - cx
        u = (dx * np.cos(th) + dy * np.sin(th)) / rx
        v = (-dx * np.sin(th) + dy * np.cos(th)) / ry
        disk = u * u + v * v <= 1.0
        if not overlap:
            disk &= inst[r0:r1, c0:c1] == 0
        if disk.sum() == 0:
            continue
        label += 1
        inst[r0:r1, c0:c1][disk] = label
    return inst


def random_mix(rng, h: int, w: int, n_max: int = 220) -> np.ndarray:
    """Instances with randomised count, sizes, margin and overlap (the parity battery's "random-mix")."""
    return random_instances(
        rng,
        h,
        w,
        int(rng.integers(5, n_max)),
        rng.uniform(1.5, 4),
        rng.uniform(5, 12),
        rng.uniform(0, 12),
        overlap=bool(rng.integers(0, 2)),
    )


def maps_from_instances(
    rng,
    name: str,
    inst: np.ndarray,
    noise: float = 0.15,
    blur: float = 0.8,
    fg_flip: float = 0.0,
    type_noise: float = 1.0,
    type_quant: float = 0.0,
    bg_type_frac: float = 0.0,
) -> Maps:
    """Logits and HV like a trained network's: targets + blur + noise; quantised type logits tie."""
    h, w = inst.shape
    n = int(inst.max())
    types = rng.integers(1, N_TYPES, size=n + 1)
    types[0] = 0
    t = make_targets(inst, types)
    hv = t.hv.astype(np.float64)
    if blur > 0:
        hv = np.stack([gaussian_filter(c, blur) for c in hv])
    hv = hv + rng.normal(0, noise, hv.shape)
    fg = t.binary.astype(np.float64)
    if fg_flip > 0:
        flip = rng.random((h, w)) < fg_flip
        fg[flip] = 1 - fg[flip]
    s = rng.uniform(0.5, 3.0, (h, w))
    bin_logits = np.stack([-(2 * fg - 1) * s, (2 * fg - 1) * s], -1) * 0.5 + rng.normal(0, 0.3, (h, w, 2))
    tl = rng.normal(0, type_noise, (h, w, N_TYPES))
    tmap = t.type_map.astype(np.int64)
    if bg_type_frac > 0:
        bg = (rng.random((h, w)) < bg_type_frac) & (tmap > 0)
        tmap = np.where(bg, 0, tmap)
    np.put_along_axis(tl, tmap[..., None], np.take_along_axis(tl, tmap[..., None], -1) + 2.0, -1)
    if type_quant > 0:
        tl = np.round(tl / type_quant) * type_quant
    return Maps(
        name=name,
        binary_logits=bin_logits.astype(np.float32),
        type_logits=tl.astype(np.float32),
        hv=hv.astype(np.float16),
        gt_inst=inst,
    )
