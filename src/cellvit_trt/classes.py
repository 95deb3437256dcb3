"""PanNuke class names and CellViT's cell colours: the one table every stage uses (no heavy imports).

Sources: TIO-IKIM/CellViT configs/datasets/PanNuke/dataset_config.yaml (names, ids) and
TIO-IKIM/CellViT-Inference cellvit/config/config.py::COLOR_DICT_CELLS (RGB colours by class id).
"""

from __future__ import annotations

PANNUKE_NUCLEI: tuple[str, ...] = (
    "Background",
    "Neoplastic",
    "Inflammatory",
    "Connective",
    "Dead",
    "Epithelial",
)

PANNUKE_TISSUE: tuple[str, ...] = (
    "Adrenal_gland",
    "Bile-duct",
    "Bladder",
    "Breast",
    "Cervix",
    "Colon",
    "Esophagus",
    "HeadNeck",
    "Kidney",
    "Liver",
    "Lung",
    "Ovarian",
    "Pancreatic",
    "Prostate",
    "Skin",
    "Stomach",
    "Testis",
    "Thyroid",
    "Uterus",
)

# COLOR_DICT_CELLS, ids 0..10; ids 1..5 are the PanNuke nuclei colours used by every CellViT viewer
CELL_COLORS: tuple[tuple[int, int, int], ...] = (
    (92, 20, 186),
    (255, 0, 0),
    (34, 221, 77),
    (35, 92, 236),
    (254, 255, 0),
    (255, 159, 68),
    (80, 56, 112),
    (87, 112, 56),
    (110, 0, 0),
    (255, 196, 196),
    (214, 255, 196),
)


def cell_color(class_id: int) -> tuple[int, int, int]:
    """Upstream colour for ids 0..10; beyond, a fixed well-spread (golden-angle) hue so output is stable."""
    if 0 <= class_id < len(CELL_COLORS):
        return CELL_COLORS[class_id]
    import colorsys

    r, g, b = colorsys.hsv_to_rgb((class_id * 0.618033988749895) % 1.0, 0.75, 0.95)
    return (round(r * 255), round(g * 255), round(b * 255))


def default_nuclei_names(n: int) -> tuple[str, ...]:
    return (
        PANNUKE_NUCLEI
        if n == len(PANNUKE_NUCLEI)
        else tuple(PANNUKE_NUCLEI[i] if i == 0 else f"class_{i}" for i in range(n))
    )


def default_tissue_names(n: int) -> tuple[str, ...]:
    return PANNUKE_TISSUE if n == len(PANNUKE_TISSUE) else tuple(f"tissue_{i}" for i in range(n))
