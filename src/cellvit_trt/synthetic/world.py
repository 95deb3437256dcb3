"""The virtual slide: tissue/glass, tissue compartments, glands and nucleus positions, all in global pixels.

A `World` is fixed by its seed and settings. Nuclei sit on jittered grids (one per compartment, spacing set by
the compartment's cell density); a grid node becomes a nucleus where the compartment at its jittered position
is the grid's own. Glands place epithelial nuclei along their rim. Every quantity is a pure function of global
position, so windows of any size and offset agree.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from statistics import NormalDist

import numpy as np

from cellvit_trt.errors import InputError
from cellvit_trt.synthetic import fields
from cellvit_trt.synthetic.morphology import (
    CONNECTIVE,
    DEAD,
    EPITHELIAL,
    INFLAMMATORY,
    N_UNIFORMS,
    NEOPLASTIC,
    Nuclei,
    empty_nuclei,
    sample_nuclei,
)
from cellvit_trt.synthetic.stain import StainParams, sample_stain

# compartments
GLASS, STROMA, TUMOUR, GLAND, INFILTRATE = 0, 1, 2, 3, 4

# tile presets; the first four are the tissue classes of the synthetic demo model
TISSUE_NAMES = ("Synthetic-Tumour", "Synthetic-Glandular", "Synthetic-Stroma", "Synthetic-Inflamed")
PRESETS = ("tumour", "glandular", "stroma", "inflamed", "mixed")

# random streams (see fields.block_rng)
S_TISSUE, S_COMP_A, S_COMP_B, S_ORIENT, S_STAIN_VAR_H, S_STAIN_VAR_E = 1, 2, 3, 4, 5, 6
S_FINE, S_COARSE, S_FIBRE, S_MOTTLE, S_SENSOR = 10, 11, 12, 13, 14  # S_SENSOR uses 14..16
S_NODES = 100  # + compartment
S_GLANDS, S_GLAND_CELLS = 200, 201

NODE_BLOCK = 16  # grid nodes per side drawn by one generator


@dataclass(frozen=True)
class CompartmentCells:
    spacing: float  # grid spacing, px at 40x
    accept: float  # probability that a node in the compartment carries a nucleus
    mix: tuple[tuple[int, float], ...]  # (class, probability)


CELLS = {
    TUMOUR: CompartmentCells(38.0, 1.0, ((NEOPLASTIC, 0.84), (INFLAMMATORY, 0.09), (DEAD, 0.07))),
    STROMA: CompartmentCells(46.0, 0.6, ((CONNECTIVE, 0.78), (INFLAMMATORY, 0.17), (DEAD, 0.05))),
    INFILTRATE: CompartmentCells(23.0, 0.95, ((INFLAMMATORY, 0.9), (CONNECTIVE, 0.05), (DEAD, 0.05))),
    GLAND: CompartmentCells(46.0, 0.5, ((CONNECTIVE, 0.8), (INFLAMMATORY, 0.2))),
}
GLAND_SPACING = 300.0  # px at 40x
GLAND_RADIUS = (75.0, 120.0)  # outer semi-axis, px at 40x
GLAND_MAX_REACH = 135.0  # gland radius plus its rim nuclei, px at 40x


@dataclass(frozen=True)
class World:
    """One virtual slide. Lengths in settings are µm; `scale` converts 40x pixel sizes to this mpp."""

    seed: int
    mpp: float = 0.25
    preset: str = "mixed"
    glass_fraction: float = 0.0
    tissue_scale_um: float = 120.0  # lattice spacing of the tissue/glass field
    compartment_scale_um: float = 45.0  # lattice spacing of the compartment fields
    stain: StainParams = field(default=None)  # type: ignore[assignment]

    def __post_init__(self) -> None:
        if self.preset not in PRESETS:
            raise InputError(f"preset: expected one of {PRESETS}, got {self.preset!r}")
        if not 0.05 <= self.mpp <= 2.0:
            raise InputError(f"mpp: expected 0.05..2.0 µm/px, got {self.mpp}")
        if not 0.0 <= self.glass_fraction < 1.0:
            raise InputError(f"glass_fraction: expected 0 <= x < 1, got {self.glass_fraction}")
        if self.stain is None:
            rng = fields.block_rng(self.seed, 999, 0, 0)
            object.__setattr__(self, "stain", sample_stain(rng))

    @property
    def scale(self) -> float:
        return 0.25 / self.mpp

    def px(self, um: float) -> float:
        return um / self.mpp

    @property
    def tissue_label(self) -> int:
        """Index into TISSUE_NAMES (-1 for the mixed preset)."""
        return PRESETS.index(self.preset) if self.preset != "mixed" else -1


def normal_quantile(p: float) -> float:
    """Quantile of N(0, 1), clipped away from 0 and 1 (thresholds for the smooth fields)."""
    return NormalDist().inv_cdf(min(max(p, 1e-9), 1 - 1e-9))


def classify(world: World, t: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Compartment ids from the tissue field `t` and compartment fields `a`, `b` (any shape)."""
    comp = np.full(t.shape, STROMA, np.uint8)
    p = world.preset
    if p == "tumour":
        comp[a > normal_quantile(0.4)] = TUMOUR
    elif p == "glandular":
        comp[a > normal_quantile(0.35)] = GLAND
    elif p == "stroma":
        comp[a > normal_quantile(0.88)] = INFILTRATE
    elif p == "inflamed":
        comp[a > normal_quantile(0.45)] = INFILTRATE
    else:
        comp[a > 0.5] = TUMOUR
        comp[a < -0.5] = GLAND
        comp[(np.abs(a) <= 0.5) & (b > 0.7)] = INFILTRATE
    if world.glass_fraction > 0:
        comp[t < normal_quantile(world.glass_fraction)] = GLASS
    return comp


def compartment_map(world: World, y0: int, x0: int, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """(compartment uint8 [h, w], tissue field float32 [h, w]) of a window."""
    sp_t, sp_c = world.px(world.tissue_scale_um), world.px(world.compartment_scale_um)
    t = fields.smooth_field(world.seed, S_TISSUE, y0, x0, h, w, sp_t)
    a = fields.smooth_field(world.seed, S_COMP_A, y0, x0, h, w, sp_c)
    b = fields.smooth_field(world.seed, S_COMP_B, y0, x0, h, w, sp_c)
    return classify(world, t, a, b), t


def compartment_at(world: World, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
    sp_t, sp_c = world.px(world.tissue_scale_um), world.px(world.compartment_scale_um)
    t = fields.smooth_field_at(world.seed, S_TISSUE, ys, xs, sp_t)
    a = fields.smooth_field_at(world.seed, S_COMP_A, ys, xs, sp_c)
    b = fields.smooth_field_at(world.seed, S_COMP_B, ys, xs, sp_c)
    return classify(world, t, a, b)


def orientation_at(world: World, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
    """Stroma fibre direction (radians) at points."""
    return 1.5 * fields.smooth_field_at(world.seed, S_ORIENT, ys, xs, world.px(30.0))


def orientation_map(world: World, y0: int, x0: int, h: int, w: int) -> np.ndarray:
    return 1.5 * fields.smooth_field(world.seed, S_ORIENT, y0, x0, h, w, world.px(30.0))


def _make_key(stream: int, ky: np.ndarray, kx: np.ndarray, sub: np.ndarray | int = 0) -> np.ndarray:
    # 15 bits stream | 20 bits row node | 20 bits col node | 8 bits sub-index: unique per nucleus
    ky = (np.asarray(ky, np.int64) + (1 << 19)) & ((1 << 20) - 1)
    kx = (np.asarray(kx, np.int64) + (1 << 19)) & ((1 << 20) - 1)
    return (((np.int64(stream) << 20 | ky) << 20 | kx) << 8) | np.asarray(sub, np.int64)


def grid_nodes(
    seed: int, stream: int, spacing: float, y0: float, x0: float, y1: float, x1: float, n_u: int = N_UNIFORMS
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Jittered grid nodes whose base position lies in [y0, y1) x [x0, x1).

    Returns (cy, cx, uniforms [N, n_u], key). Uniforms 0-1 are the jitter (+-0.4 spacing).
    """
    ky0, ky1 = int(np.ceil(y0 / spacing)), int(np.ceil(y1 / spacing))
    kx0, kx1 = int(np.ceil(x0 / spacing)), int(np.ceil(x1 / spacing))
    if ky1 <= ky0 or kx1 <= kx0:
        return np.zeros(0), np.zeros(0), np.zeros((0, n_u)), np.zeros(0, np.int64)
    ny, nx = ky1 - ky0, kx1 - kx0
    u = np.empty((ny, nx, n_u))
    b = NODE_BLOCK
    for by in range(ky0 // b, (ky1 - 1) // b + 1):
        for bx in range(kx0 // b, (kx1 - 1) // b + 1):
            block = fields.block_rng(seed, stream, by, bx).random((b, b, n_u))
            ys, ye = max(ky0, by * b), min(ky1, (by + 1) * b)
            xs, xe = max(kx0, bx * b), min(kx1, (bx + 1) * b)
            u[ys - ky0 : ye - ky0, xs - kx0 : xe - kx0] = block[
                ys - by * b : ye - by * b, xs - bx * b : xe - bx * b
            ]
    ky, kx = np.meshgrid(np.arange(ky0, ky1), np.arange(kx0, kx1), indexing="ij")
    u = u.reshape(-1, n_u)
    cy = ky.ravel() * spacing + (u[:, 0] - 0.5) * 0.8 * spacing
    cx = kx.ravel() * spacing + (u[:, 1] - 0.5) * 0.8 * spacing
    return cy, cx, u, _make_key(stream, ky.ravel(), kx.ravel())


@dataclass
class Glands:
    cy: np.ndarray
    cx: np.ndarray
    ry: np.ndarray  # semi-axis across `angle`
    rx: np.ndarray  # semi-axis along `angle`
    angle: np.ndarray
    nest: np.ndarray  # bool: solid nest of cells instead of a gland with a lumen
    ky: np.ndarray
    kx: np.ndarray

    def __len__(self) -> int:
        return int(self.cy.shape[0])

    def radius_norm(self, i: int, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
        """Elliptic radius of points relative to gland i (1 = outer boundary)."""
        dy, dx = ys - self.cy[i], xs - self.cx[i]
        ca, sa = np.cos(self.angle[i]), np.sin(self.angle[i])
        return np.hypot((dx * ca + dy * sa) / self.rx[i], (-dx * sa + dy * ca) / self.ry[i])


def glands_in(world: World, y0: float, x0: float, y1: float, x1: float) -> Glands:
    """Glands whose centre lies in the box (only where the compartment is GLAND)."""
    s = world.scale
    sp = GLAND_SPACING * s
    cy, cx, u, key = grid_nodes(world.seed, S_GLANDS, sp, y0 - sp, x0 - sp, y1 + sp, x1 + sp, n_u=8)
    inside = (cy >= y0) & (cy < y1) & (cx >= x0) & (cx < x1)
    keep = inside & (compartment_at(world, cy, cx) == GLAND) & (u[:, 2] < 0.9)
    u = u[keep]
    r = (GLAND_RADIUS[0] + (GLAND_RADIUS[1] - GLAND_RADIUS[0]) * u[:, 3]) * s
    nest = u[:, 6] < 0.25
    r = np.where(nest, r * 0.55, r)
    ky = (key[keep] >> 28) & ((1 << 20) - 1)
    kx = (key[keep] >> 8) & ((1 << 20) - 1)
    return Glands(
        cy=cy[keep],
        cx=cx[keep],
        ry=r * (0.7 + 0.3 * u[:, 4]),
        rx=r,
        angle=u[:, 5] * np.pi,
        nest=nest,
        ky=ky,
        kx=kx,
    )


def gland_nuclei(world: World, glands: Glands) -> Nuclei:
    """Epithelial nuclei of each gland: radial along the rim, or packed in a solid nest."""
    s = world.scale
    parts = []
    for i in range(len(glands)):
        rng = fields.block_rng(world.seed, S_GLAND_CELLS, int(glands.ky[i]), int(glands.kx[i]))
        ca, sa = np.cos(glands.angle[i]), np.sin(glands.angle[i])
        if glands.nest[i]:
            sp = 22.0 * s
            n_side = int(np.ceil(max(glands.rx[i], glands.ry[i]) / sp)) + 1
            g = np.arange(-n_side, n_side + 1) * sp
            lu, lv = np.meshgrid(g, g, indexing="ij")
            lu = lu.ravel() + rng.uniform(-0.3, 0.3, lu.size) * sp
            lv = lv.ravel() + rng.uniform(-0.3, 0.3, lv.size) * sp
            ok = np.hypot(lu / (glands.rx[i] - 8 * s), lv / (glands.ry[i] - 8 * s)) <= 1.0
            lu, lv = lu[ok], lv[ok]
            hint = np.full(lu.size, np.nan)
        else:
            rx, ry = glands.rx[i] - 13 * s, glands.ry[i] - 13 * s
            perim = np.pi * (3 * (rx + ry) - np.sqrt((3 * rx + ry) * (rx + 3 * ry)))
            n = max(int(perim / (15.0 * s)), 6)
            t = (np.arange(n) + rng.uniform(-0.15, 0.15, n)) * 2 * np.pi / n + rng.uniform(0, 2 * np.pi)
            lu, lv = rx * np.cos(t), ry * np.sin(t)
            # long axis along the outward normal (nuclei stand perpendicular to the basement membrane)
            hint = np.arctan2(
                np.sin(t) / ry * ca + np.cos(t) / rx * sa, np.cos(t) / rx * ca - np.sin(t) / ry * sa
            )
            keep = rng.random(n) < 0.93
            lu, lv, hint = lu[keep], lv[keep], hint[keep]
        m = lu.size
        if m == 0:
            continue
        u = rng.random((m, N_UNIFORMS))
        cy = glands.cy[i] + lu * sa + lv * ca
        cx = glands.cx[i] + lu * ca - lv * sa
        key = _make_key(S_GLAND_CELLS, np.full(m, glands.ky[i]), np.full(m, glands.kx[i]), np.arange(m) % 256)
        # the 8-bit sub-index wraps for very large nests; keep keys unique by dropping the overflow
        m = min(m, 256)
        parts.append(
            sample_nuclei(np.full(m, EPITHELIAL), cy[:m], cx[:m], u[:m], key[:m], s, angle_hint=hint[:m])
        )
    return Nuclei.concat(parts) if parts else empty_nuclei()


def nuclei_in(world: World, y0: float, x0: float, y1: float, x1: float, glands: Glands) -> Nuclei:
    """Nuclei whose centre lies in the box: compartment grids, dead-cell fragments, gland epithelium."""
    s = world.scale
    parts = []
    for comp, cells in CELLS.items():
        sp = cells.spacing * s
        m_ = 0.5 * sp + 16 * s  # jitter and fragment offset
        cy, cx, u, key = grid_nodes(world.seed, S_NODES + comp, sp, y0 - m_, x0 - m_, y1 + m_, x1 + m_)
        if cy.size == 0:
            continue
        ok = compartment_at(world, cy, cx) == comp
        ok &= u[:, 3] < cells.accept
        if len(glands):
            for g in range(len(glands)):
                ok &= glands.radius_norm(g, cy, cx) > 1.08
        cy, cx, u, key = cy[ok], cx[ok], u[ok], key[ok]
        cum = np.cumsum([p for _, p in cells.mix])
        cls = np.array([c for c, _ in cells.mix])[
            np.minimum(np.searchsorted(cum / cum[-1], u[:, 2]), len(cum) - 1)
        ]
        hint = np.where(cls == CONNECTIVE, orientation_at(world, cy, cx), np.nan)
        nuc = sample_nuclei(cls, cy, cx, u, key, s, angle_hint=hint)
        parts.append(nuc)
        parts.append(_fragments(nuc, u, s))
    parts.append(gland_nuclei(world, glands))
    nuc = Nuclei.concat(parts)
    inside = (nuc.cy >= y0) & (nuc.cy < y1) & (nuc.cx >= x0) & (nuc.cx < x1)
    return nuc.select(np.nonzero(inside)[0])


def _fragments(nuc: Nuclei, u: np.ndarray, s: float) -> Nuclei:
    """Karyorrhexis: half of the dead cells shed 2-3 small dense fragments around the pyknotic body."""
    dead = np.nonzero((nuc.type == DEAD) & (u[:, 29] < 0.5))[0]
    parts = []
    for j in range(3):
        sel = dead[(j < 2) | (u[dead, 30] < 0.5)]
        if sel.size == 0:
            continue
        uj = np.roll(u[sel], 5 * (j + 1), axis=1)  # decorrelated but deterministic uniforms per fragment
        th = 2 * np.pi * (u[sel, 31] + j / 3.0)
        d = (9.0 + 5.0 * uj[:, 9]) * s
        frag = sample_nuclei(
            np.full(sel.size, DEAD),
            nuc.cy[sel] + d * np.sin(th),
            nuc.cx[sel] + d * np.cos(th),
            uj,
            nuc.key[sel] + j + 1,
            s,
            size_factor=np.full(sel.size, 0.68),
        )
        frag.z = nuc.z[sel] + 1e-3 * (j + 1)
        parts.append(frag)
    return Nuclei.concat(parts) if parts else empty_nuclei()
