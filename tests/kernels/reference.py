"""A plain NumPy / SciPy / scikit-image / OpenCV copy of the upstream algorithm with free parameters.

The cellvit package hard-codes the x40 constants, so the x20 constants (Sobel 11, object size 3, from
TIO-IKIM/CellViT post_proc_cellvit.py) are checked against this reference, which is itself checked against the
oracle at x40 (test_reference_matches_oracle_x40).
"""

from __future__ import annotations

import cv2
import numpy as np
from scipy.ndimage import binary_fill_holes, label
from skimage.segmentation import watershed


def _remove_small(lab: np.ndarray, min_size: int) -> np.ndarray:
    sizes = np.bincount(lab.ravel())
    lab[(sizes < min_size)[lab]] = 0
    return lab


def proc_np_hv(fg01: np.ndarray, hv: np.ndarray, ksize: int, object_size: int) -> np.ndarray:
    blb = label(np.array(fg01 >= 0.5, dtype=np.int32))[0]
    blb = _remove_small(blb, 10)
    blb[blb > 0] = 1
    norm = dict(alpha=0, beta=1, norm_type=cv2.NORM_MINMAX, dtype=cv2.CV_32F)
    h_dir = cv2.normalize(hv[0].astype(np.float32), None, **norm)
    v_dir = cv2.normalize(hv[1].astype(np.float32), None, **norm)
    sobelh = 1 - cv2.normalize(cv2.Sobel(h_dir, cv2.CV_64F, 1, 0, ksize=ksize), None, **norm)
    sobelv = 1 - cv2.normalize(cv2.Sobel(v_dir, cv2.CV_64F, 0, 1, ksize=ksize), None, **norm)
    overall = np.maximum(sobelh, sobelv) - (1 - blb)
    overall[overall < 0] = 0
    dist = -cv2.GaussianBlur((1.0 - overall) * blb, (3, 3), 0)
    marker = blb - np.array(overall >= 0.4, dtype=np.int32)
    marker[marker < 0] = 0
    marker = binary_fill_holes(marker).astype("uint8")
    marker = cv2.morphologyEx(marker, cv2.MORPH_OPEN, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (5, 5)))
    marker = _remove_small(label(marker)[0], object_size)
    return watershed(dist, markers=marker, mask=blb)


def remap(pred: np.ndarray) -> np.ndarray:
    ids = [i for i in np.unique(pred) if i != 0]
    out = np.zeros(pred.shape, np.int32)
    for k, i in enumerate(ids):
        out[pred == i] = k + 1
    return out


def cell_dict(inst: np.ndarray, type_map: np.ndarray) -> dict:
    cells = {}
    for i in np.unique(inst)[1:]:
        m = inst == i
        rows, cols = np.any(m, 1), np.any(m, 0)
        r0, r1 = np.where(rows)[0][[0, -1]]
        c0, c1 = np.where(cols)[0][[0, -1]]
        r1 += 1
        c1 += 1
        crop = m[r0:r1, c0:c1].astype(np.uint8)
        mom = cv2.moments(crop)
        contour = np.squeeze(
            cv2.findContours(crop, cv2.RETR_TREE, cv2.CHAIN_APPROX_SIMPLE)[0][0].astype("int32")
        )
        if contour.shape[0] < 3 or contour.ndim != 2:
            continue
        centroid = np.array([mom["m10"] / mom["m00"] + c0, mom["m01"] / mom["m00"] + r0])
        contour[:, 0] += c0
        contour[:, 1] += r0
        t, n = np.unique(type_map[r0:r1, c0:c1][crop.astype(bool)], return_counts=True)
        lst = sorted(zip(t, n, strict=True), key=lambda x: x[1], reverse=True)
        typ = lst[0][0]
        if typ == 0 and len(lst) > 1:
            typ = lst[1][0]
        prob = dict(lst)[typ] / (np.sum(crop) + 1.0e-6)
        cells[int(i)] = {
            "bbox": np.array([[r0, c0], [r1, c1]]),
            "centroid": centroid,
            "contour": contour,
            "type_prob": float(prob),
            "type": int(typ),
        }
    return cells


def post_process(fg01, hv, type_map, ksize=21, object_size=10):
    inst = remap(proc_np_hv(fg01, hv, ksize, object_size))
    return inst, cell_dict(inst, type_map)


def expected_cut(markers: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Our watershed's cut flag per marker label, by its definition: the marker has a pixel outside the
    mask whose 8 neighbours are not all in-mask pixels of the same marker (such "holes" cannot disconnect
    the marker's in-mask part)."""
    h, w = markers.shape
    cut = np.zeros(int(markers.max()) + 1, bool)
    for r, c in zip(*np.nonzero((markers > 0) & (mask == 0)), strict=True):
        lab = markers[r, c]
        ring = np.ones((3, 3), bool)
        ring[1, 1] = False
        if not (0 < r < h - 1 and 0 < c < w - 1):
            cut[lab] = True
            continue
        around = (slice(r - 1, r + 2), slice(c - 1, c + 2))
        if not np.all((markers[around][ring] == lab) & (mask[around][ring] != 0)):
            cut[lab] = True
    return cut
