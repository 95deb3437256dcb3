"""H&E colour by the Beer-Lambert law: stain concentrations -> optical density -> RGB.

I = I0 * exp(-(c_H * v_H + c_E * v_E)), with unit optical-density vectors v_H, v_E (Ruifrok & Johnston 2001,
"Quantification of histochemical staining by color deconvolution"). Each tile or slide jitters the vectors,
the stain strengths, the glass brightness, the optical blur and the sensor noise.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

# Ruifrok & Johnston H&E optical-density vectors (R, G, B), normalised below.
HEMATOXYLIN_OD = (0.650, 0.704, 0.286)
EOSIN_OD = (0.12, 0.86, 0.50)  # between Ruifrok's (0.07, 0.99, 0.11) and Macenko's reference, pinker


@dataclass(frozen=True)
class StainParams:
    hematoxylin: tuple[float, float, float]  # unit OD vector
    eosin: tuple[float, float, float]  # unit OD vector
    h_strength: float  # multiplies hematoxylin concentration
    e_strength: float  # multiplies eosin concentration
    background: tuple[float, float, float]  # glass intensity I0 per channel, 0..255
    blur_sigma: float  # Gaussian optical blur in pixels (0 = sharp)
    noise_sigma: float  # additive sensor noise, grey levels


def _unit(v: np.ndarray) -> tuple[float, float, float]:
    v = np.abs(v) / np.linalg.norm(v)
    return (float(v[0]), float(v[1]), float(v[2]))


def sample_stain(
    rng: np.random.Generator, jitter: float = 1.0, blur: tuple[float, float] = (0.0, 1.3)
) -> StainParams:
    """Per-tile stain: vectors jittered by ~0.05 per component, strengths by about +-25 %."""
    h = np.asarray(HEMATOXYLIN_OD) + rng.normal(0.0, 0.05 * jitter, 3)
    e = np.asarray(EOSIN_OD) + rng.normal(0.0, 0.05 * jitter, 3)
    bg = rng.uniform(236, 252) + rng.normal(0.0, 2.0 * jitter, 3)
    return StainParams(
        hematoxylin=_unit(h),
        eosin=_unit(e),
        h_strength=float(np.exp(rng.normal(0.0, 0.15 * jitter))),
        e_strength=float(np.exp(rng.normal(0.0, 0.2 * jitter))),
        background=tuple(float(np.clip(x, 215, 255)) for x in bg),  # type: ignore[arg-type]
        blur_sigma=float(rng.uniform(*blur)),
        noise_sigma=float(rng.uniform(0.5, 3.0)),
    )


def compose_rgb(
    h_conc: np.ndarray,
    e_conc: np.ndarray,
    stain: StainParams,
    noise: np.ndarray | None = None,
    margin: int = 0,
) -> np.ndarray:
    """uint8 [H-2m, W-2m, 3] RGB from concentration maps [H, W]; `margin` px feed the blur, then are cut.

    `noise` (float32 [H-2m, W-2m, 3], unit variance, or None) is the sensor noise of the output pixels,
    passed in so that it is a function of global pixel position.
    """
    ch = h_conc * np.float32(stain.h_strength)
    ce = e_conc * np.float32(stain.e_strength)
    out = np.empty(h_conc.shape + (3,), np.float32)
    for k in range(3):
        od = ch * np.float32(stain.hematoxylin[k]) + ce * np.float32(stain.eosin[k])
        out[..., k] = np.exp(-od) * np.float32(stain.background[k])
    if stain.blur_sigma > 0.05:
        out = cv2.GaussianBlur(out, (0, 0), stain.blur_sigma, borderType=cv2.BORDER_REFLECT)
    if margin:
        out = out[margin:-margin, margin:-margin]
    if noise is not None and stain.noise_sigma > 0:
        out += noise * np.float32(stain.noise_sigma)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)
