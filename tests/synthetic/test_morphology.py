"""The five nucleus classes differ as designed: size, elongation, darkness."""

from __future__ import annotations

import numpy as np
import pytest

from cellvit_trt.synthetic import generate_tile
from cellvit_trt.synthetic.morphology import CONNECTIVE, DEAD, EPITHELIAL, INFLAMMATORY, NEOPLASTIC


def _stats(tiles):
    """Per class: mean area, mean eccentricity (second moments), mean grey level inside the nuclei."""
    area, ecc, grey = {c: [] for c in range(1, 6)}, {c: [] for c in range(1, 6)}, {c: [] for c in range(1, 6)}
    for t in tiles:
        inst = t.inst_map.ravel()
        n = int(inst.max()) + 1
        rows, cols = np.indices(t.inst_map.shape)
        r, c = rows.ravel().astype(float), cols.ravel().astype(float)
        a = np.bincount(inst, minlength=n).astype(float)
        a[a == 0] = 1
        mr, mc = np.bincount(inst, r, n) / a, np.bincount(inst, c, n) / a
        srr = np.bincount(inst, r * r, n) / a - mr**2
        scc = np.bincount(inst, c * c, n) / a - mc**2
        src = np.bincount(inst, r * c, n) / a - mr * mc
        tr, det = srr + scc, srr * scc - src**2
        disc = np.sqrt(np.maximum(tr**2 / 4 - det, 0))
        l1, l2 = tr / 2 + disc, np.maximum(tr / 2 - disc, 1e-9)
        e = np.sqrt(1 - l2 / np.maximum(l1, 1e-9))
        g = np.bincount(inst, t.image.mean(axis=2).ravel(), n) / a
        for i, cls in zip(t.cells.id, t.cells.type, strict=True):
            if t.cells.area[i - 1] < 30:  # skip slivers cut by the tile border
                continue
            area[cls].append(t.cells.area[i - 1])
            ecc[cls].append(e[i])
            grey[cls].append(g[i])
    return (
        {k: np.mean(v) for k, v in area.items()},
        {k: np.mean(v) for k, v in ecc.items()},
        {k: np.mean(v) for k, v in grey.items()},
        {k: len(v) for k, v in area.items()},
    )


@pytest.fixture(scope="module")
def stats():
    tiles = [
        generate_tile(256, seed=s, preset=p, glass_fraction=0.0)
        for s, p in ((1, "glandular"), (3, "mixed"), (2, "tumour"), (2, "stroma"))
    ]
    return _stats(tiles)


def test_every_class_occurs(stats):
    counts = stats[3]
    assert all(counts[c] >= 10 for c in range(1, 6)), counts


def test_sizes_differ_as_designed(stats):
    area = stats[0]
    assert area[NEOPLASTIC] > 1.5 * area[EPITHELIAL]
    assert area[EPITHELIAL] > area[INFLAMMATORY] > 2 * area[DEAD]
    assert area[CONNECTIVE] > area[INFLAMMATORY]


def test_spindles_are_elongated_and_lymphocytes_round(stats):
    ecc = stats[1]
    assert ecc[CONNECTIVE] > 0.9
    assert ecc[INFLAMMATORY] < 0.6
    assert ecc[CONNECTIVE] > ecc[EPITHELIAL] > ecc[INFLAMMATORY]


def test_darkness_differs_as_designed(stats):
    grey = stats[2]  # lower = darker
    assert grey[DEAD] < grey[INFLAMMATORY] < grey[NEOPLASTIC]
    assert grey[INFLAMMATORY] < grey[EPITHELIAL]
