"""Nucleus shapes and stain profiles for the five PanNuke classes.

Sizes are in pixels at 0.25 µm/px (40x) and scaled by 0.25 / mpp. Each class is designed to be told apart by
what a pathologist would use:

| class | shape | size (semi-axes, px at 40x) | hematoxylin |
|---|---|---|---|
| 1 Neoplastic | large, irregular, pleomorphic | 14-23 x 0.6-0.95 of it | pale, coarse chromatin, nucleoli |
| 2 Inflammatory | small, round | 8-11, aspect 0.85-1 | very dark, homogeneous |
| 3 Connective | spindle, slightly bent, along the stroma fibres | 16-28 x 4.5-6.5 | dark, fine chromatin |
| 4 Dead | small dense pyknotic body (+ fragments) | 4.5-7 (fragments 3.2-4.5) | darkest; eosinophilic halo |
| 5 Epithelial | medium oval, radial in glands or in nests | 10-13 x 0.6-0.8 of it | moderate, fine |
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numba import njit

from cellvit_trt.classes import PANNUKE_NUCLEI

NEOPLASTIC, INFLAMMATORY, CONNECTIVE, DEAD, EPITHELIAL = 1, 2, 3, 4, 5
TYPE_NAMES = dict(enumerate(PANNUKE_NUCLEI))

N_UNIFORMS = 32  # uniforms drawn per nucleus; layout uses 0-4, morphology 5-31
MAX_EXTENT_40X = 34.0  # no nucleus reaches further than this from its centre (px at 40x; spindles ~33)


@dataclass
class Nuclei:
    """A struct of arrays of nuclei in global pixel coordinates (row = y, col = x)."""

    cy: np.ndarray  # float64 [N]
    cx: np.ndarray
    type: np.ndarray  # int64 [N], 1..5
    a: np.ndarray  # semi-axis along `angle`, px
    b: np.ndarray  # semi-axis across, px
    angle: np.ndarray  # radians, direction (cos, sin) in (x, y)
    harm: np.ndarray  # [N, 4] boundary harmonics k = 2..5 (relative amplitude)
    phase: np.ndarray  # [N, 4]
    bend: np.ndarray  # banana bend, relative to b
    dark: np.ndarray  # base hematoxylin concentration (optical density units)
    chromatin: np.ndarray  # relative texture amplitude
    coarse: np.ndarray  # 0 = fine chromatin, 1 = coarse clumps
    rim: np.ndarray  # relative rim accentuation
    nucleoli: np.ndarray  # [N, 3, 3]: (u, v) in units of (a, b), radius px (0 = none)
    z: np.ndarray  # drawing order key, higher = on top
    key: np.ndarray  # int64 [N], unique per nucleus in the virtual slide

    def __len__(self) -> int:
        return int(self.cy.shape[0])

    def select(self, idx: np.ndarray) -> Nuclei:
        return Nuclei(**{k: v[idx] for k, v in self.__dict__.items()})

    @staticmethod
    def concat(parts: list[Nuclei]) -> Nuclei:
        parts = [p for p in parts if len(p)]
        if not parts:
            return empty_nuclei()
        return Nuclei(**{k: np.concatenate([getattr(p, k) for p in parts]) for k in parts[0].__dict__})


def empty_nuclei() -> Nuclei:
    z = np.zeros(0)
    return Nuclei(
        z,
        z,
        z.astype(np.int64),
        z,
        z,
        z,
        np.zeros((0, 4)),
        np.zeros((0, 4)),
        z,
        z,
        z,
        z,
        z,
        np.zeros((0, 3, 3)),
        z,
        z.astype(np.int64),
    )


def _lerp(u: np.ndarray, lo: float, hi: float) -> np.ndarray:
    return lo + (hi - lo) * u


def sample_nuclei(
    types: np.ndarray,
    cy: np.ndarray,
    cx: np.ndarray,
    u: np.ndarray,
    key: np.ndarray,
    scale: float,
    angle_hint: np.ndarray | None = None,
    size_factor: np.ndarray | None = None,
) -> Nuclei:
    """Nuclei of the given classes at (cy, cx) from per-nucleus uniforms `u` [N, N_UNIFORMS].

    `angle_hint` (radians or NaN) fixes the long-axis direction (stroma fibres, gland radii); `size_factor`
    shrinks nuclei (karyorrhectic fragments).
    """
    n = types.shape[0]
    t = types.astype(np.int64)
    a = np.zeros(n)
    asp = np.zeros(n)
    harm_amp = np.zeros(n)
    dark = np.zeros(n)
    chrom = np.zeros(n)
    coarse = np.zeros(n)
    rim = np.zeros(n)
    bend = np.zeros(n)
    n_nucleoli = np.zeros(n, np.int64)
    nucleolus_r = np.zeros(n)
    for cls, (a_rng, asp_rng, h_amp, d_rng, ch, co, ri, be) in {
        NEOPLASTIC: ((14.0, 23.0), (0.6, 0.95), 0.075, (0.55, 0.95), 0.45, 1.0, 0.45, 0.0),
        INFLAMMATORY: ((8.0, 11.0), (0.85, 1.0), 0.02, (1.55, 2.0), 0.08, 0.0, 0.1, 0.0),
        CONNECTIVE: ((16.0, 28.0), (0.16, 0.28), 0.025, (1.05, 1.45), 0.12, 0.0, 0.1, 0.35),
        DEAD: ((4.5, 7.0), (0.8, 1.0), 0.04, (2.3, 2.9), 0.03, 0.0, 0.0, 0.0),
        EPITHELIAL: ((10.0, 13.0), (0.6, 0.8), 0.03, (0.8, 1.1), 0.18, 0.3, 0.2, 0.0),
    }.items():
        m = t == cls
        a[m] = _lerp(u[m, 5], *a_rng)
        asp[m] = _lerp(u[m, 6], *asp_rng)
        harm_amp[m] = h_amp
        dark[m] = _lerp(u[m, 16], *d_rng)
        chrom[m] = ch * _lerp(u[m, 28], 0.7, 1.3)
        coarse[m] = co
        rim[m] = ri
        bend[m] = be * (2 * u[m, 17] - 1)
    if CONNECTIVE in t:
        # spindles: the minor axis is absolute (4.5-6.5 px: a 2.3-3.3 µm wide nucleus), not a length ratio
        m = t == CONNECTIVE
        asp[m] = _lerp(u[m, 6], 4.5, 6.5) / a[m]
    neo = t == NEOPLASTIC
    n_nucleoli[neo] = 1 + (u[neo, 18] * 3).astype(np.int64)
    nucleolus_r[neo] = 1.0
    epi = t == EPITHELIAL
    n_nucleoli[epi] = (u[epi, 18] < 0.2).astype(np.int64)
    nucleolus_r[epi] = 0.7
    if size_factor is not None:
        a = a * size_factor
    a = a * scale
    b = a * asp
    angle = u[:, 7] * np.pi
    if angle_hint is not None:
        fixed = np.isfinite(angle_hint)
        angle = np.where(fixed, angle_hint + (u[:, 7] - 0.5) * 0.5, angle)
    harm = harm_amp[:, None] * (2 * u[:, 8:12] - 1) * np.array([1.0, 0.8, 0.6, 0.4])
    phase = u[:, 12:16] * 2 * np.pi
    nucleoli = np.zeros((n, 3, 3))
    for j in range(3):
        r = 0.45 * u[:, 19 + 3 * j]
        th = u[:, 20 + 3 * j] * 2 * np.pi
        nucleoli[:, j, 0] = r * np.cos(th)
        nucleoli[:, j, 1] = r * np.sin(th)
        rad = nucleolus_r * _lerp(u[:, 21 + 3 * j], 1.6, 2.8) * scale
        nucleoli[:, j, 2] = np.where(j < n_nucleoli, rad, 0.0)
    return Nuclei(
        cy=np.asarray(cy, np.float64),
        cx=np.asarray(cx, np.float64),
        type=t,
        a=a,
        b=b,
        angle=angle,
        harm=harm,
        phase=phase,
        bend=bend,
        dark=dark,
        chromatin=chrom,
        coarse=coarse,
        rim=rim,
        nucleoli=nucleoli,
        z=u[:, 4].copy(),
        key=np.asarray(key, np.int64),
    )


def extent(nuc: Nuclei) -> np.ndarray:
    """Upper bound of each nucleus' reach from its centre, px."""
    return nuc.a * (1.0 + np.abs(nuc.harm).sum(axis=1)) + np.abs(nuc.bend) * nuc.b + 1.0


@njit(cache=True, nogil=True)
def _rr_box(
    cy: float,
    cx: float,
    a: float,
    b: float,
    angle: float,
    bend: float,
    harm: np.ndarray,
    phase: np.ndarray,
    r0: int,
    c0: int,
    h: int,
    w: int,
) -> np.ndarray:
    # normalised radius rho / boundary(phi); the boundary is 1 + sum_k A_k cos(k phi + phase_k), k = 2..5
    out = np.empty((h, w), np.float32)
    ca, sa = np.cos(angle), np.sin(angle)
    hc = np.empty(4)
    hs = np.empty(4)
    for k in range(4):
        hc[k] = harm[k] * np.cos(phase[k])
        hs[k] = harm[k] * np.sin(phase[k])
    for r in range(h):
        dy = r0 + r - cy
        for c in range(w):
            dx = c0 + c - cx
            p = (dx * ca + dy * sa) / a
            q = (dy * ca - dx * sa) / b - bend * p * p
            rho = np.sqrt(p * p + q * q)
            if rho < 1e-9:
                out[r, c] = 0.0
                continue
            c1, s1 = p / rho, q / rho
            ck, sk = c1, s1
            bound = 1.0
            for k in range(4):
                ck, sk = ck * c1 - sk * s1, sk * c1 + ck * s1  # cos, sin of (k + 2) phi
                bound += hc[k] * ck - hs[k] * sk
            out[r, c] = rho / bound
    return out


def rasterise(nuc: Nuclei, i: int, reach: float) -> tuple[int, int, np.ndarray, np.ndarray]:
    """(row0, col0, mask bool [h, w], normalised radius float32 [h, w]) of nucleus i in global pixels.

    `reach` is `extent(nuc)[i]`, computed once for all nuclei by the caller.
    """
    cy, cx = nuc.cy[i], nuc.cx[i]
    r0, r1 = int(np.floor(cy - reach)), int(np.ceil(cy + reach)) + 1
    c0, c1 = int(np.floor(cx - reach)), int(np.ceil(cx + reach)) + 1
    rr = _rr_box(
        cy,
        cx,
        nuc.a[i],
        nuc.b[i],
        nuc.angle[i],
        nuc.bend[i],
        nuc.harm[i],
        nuc.phase[i],
        r0,
        c0,
        r1 - r0,
        c1 - c0,
    )
    return r0, c0, rr <= 1.0, rr


def stain_profile(
    nuc: Nuclei, i: int, r0: int, c0: int, rr: np.ndarray, fine: np.ndarray, coarse: np.ndarray
) -> np.ndarray:
    """Hematoxylin concentration [h, w] of nucleus i over its box; `fine`/`coarse` are texture crops."""
    tex = (1.0 - nuc.coarse[i]) * fine + nuc.coarse[i] * coarse
    conc = nuc.dark[i] * (1.0 + nuc.chromatin[i] * tex)
    if nuc.rim[i] > 0:
        conc = conc * (1.0 + nuc.rim[i] * np.clip((rr - 0.72) / 0.28, 0.0, 1.0))
    if nuc.nucleoli[i, 0, 2] > 0:
        h, w = rr.shape
        dy = (np.arange(r0, r0 + h) - nuc.cy[i])[:, None]
        dx = (np.arange(c0, c0 + w) - nuc.cx[i])[None, :]
        ca, sa = np.cos(nuc.angle[i]), np.sin(nuc.angle[i])
        pu = dx * ca + dy * sa
        pv = -dx * sa + dy * ca
        for j in range(3):
            rad = nuc.nucleoli[i, j, 2]
            if rad <= 0:
                break
            d2 = (pu - nuc.nucleoli[i, j, 0] * nuc.a[i]) ** 2 + (pv - nuc.nucleoli[i, j, 1] * nuc.b[i]) ** 2
            conc = conc + 1.1 * np.clip(1.0 - d2 / (rad * rad), 0.0, 1.0) ** 0.5
    return np.maximum(conc, 0.05).astype(np.float32)
