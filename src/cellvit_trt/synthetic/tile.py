"""One synthetic H&E tile with exact ground truth (`generate_tile`)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cellvit_trt.errors import InputError
from cellvit_trt.synthetic.render import Window, render_window
from cellvit_trt.synthetic.targets import Targets, make_targets
from cellvit_trt.synthetic.world import PRESETS, TISSUE_NAMES, World


@dataclass(frozen=True)
class CellList:
    """Ground-truth cells of a tile or slide, a struct of arrays (ids ascending)."""

    id: np.ndarray  # int32 [N]
    type: np.ndarray  # uint8 [N], 1..5
    centroid: np.ndarray  # float64 [N, 2] = (x, y) pixels
    area: np.ndarray  # int64 [N] pixels
    bbox: np.ndarray  # int32 [N, 4] = (rmin, cmin, rmax+1, cmax+1)

    def __len__(self) -> int:
        return int(self.id.shape[0])


@dataclass(frozen=True)
class SyntheticTile:
    image: np.ndarray  # uint8 [H, W, 3] RGB
    inst_map: np.ndarray  # int32 [H, W], 0 = background, ids 1..N
    type_map: np.ndarray  # uint8 [H, W], 0 = background, 1..5 PanNuke classes
    cells: CellList
    tissue: int  # index into TISSUE_NAMES, -1 for the mixed preset
    world: World

    @property
    def inst_types(self) -> np.ndarray:
        """uint8 [N+1]: class of each instance id (entry 0 = background)."""
        lut = np.zeros(int(self.inst_map.max()) + 1, np.uint8)
        lut[self.cells.id] = self.cells.type
        return lut

    def targets(self) -> Targets:
        """Training targets (binary, HoVer HV map, type map) from `synthetic.targets`."""
        return make_targets(self.inst_map, self.inst_types)


def cell_list(inst_map: np.ndarray, types: np.ndarray) -> CellList:
    """Cells of an instance map whose ids are 1..N; `types[id]` is the class of instance id."""
    n = int(inst_map.max())
    flat = inst_map.ravel()
    area = np.bincount(flat, minlength=n + 1)
    rows, cols = np.indices(inst_map.shape)
    sy = np.bincount(flat, weights=rows.ravel(), minlength=n + 1)
    sx = np.bincount(flat, weights=cols.ravel(), minlength=n + 1)
    ids = np.nonzero(area[1:])[0] + 1
    bbox = np.zeros((ids.size, 4), np.int32)
    if ids.size:
        import scipy.ndimage as ndi

        for k, sl in enumerate(ndi.find_objects(inst_map)):
            if sl is None:
                continue
            j = np.searchsorted(ids, k + 1)
            bbox[j] = (sl[0].start, sl[1].start, sl[0].stop, sl[1].stop)
    a = area[ids]
    return CellList(
        id=ids.astype(np.int32),
        type=np.asarray(types)[ids].astype(np.uint8),
        centroid=np.stack([sx[ids] / a, sy[ids] / a], axis=1),
        area=a.astype(np.int64),
        bbox=bbox,
    )


def relabel(window: Window) -> tuple[np.ndarray, np.ndarray]:
    """(inst_map int32 with ids 1..N in drawing order, class per id uint8 [N+1]) of a rendered window."""
    present = np.nonzero(np.bincount(window.label.ravel() + 1, minlength=len(window.nuclei) + 1)[1:])[0]
    lut = np.zeros(len(window.nuclei) + 1, np.int32)  # index + 1 -> new id; slot 0 is background (-1 + 1)
    lut[present + 1] = np.arange(1, present.size + 1, dtype=np.int32)
    inst = lut[window.label + 1]
    types = np.zeros(present.size + 1, np.uint8)
    types[1:] = window.nuclei.type[present]
    return inst, types


def generate_tile(
    size: int | tuple[int, int] = 256,
    seed: int = 0,
    mpp: float = 0.25,
    preset: str | None = None,
    glass_fraction: float | None = None,
    origin: tuple[int, int] = (0, 0),
) -> SyntheticTile:
    """A synthetic H&E tile of `size` (square or (H, W)) with exact instance, type and tissue ground truth.

    Everything is a function of `seed`: the preset (unless given), the glass fraction (unless given; half of
    the tiles have none), the stain and blur, and the tissue. `origin` picks the window of the virtual slide,
    so two tiles of one seed at different origins are windows of one slide (and agree where they overlap).
    """
    h, w = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
    if h < 1 or w < 1:
        raise InputError(f"size: expected positive tile height and width, got {size!r}")
    rng = np.random.default_rng([int(seed), 424242])
    chosen = preset if preset is not None else str(rng.choice(PRESETS[: len(TISSUE_NAMES)]))
    gf = glass_fraction
    if gf is None:
        gf = 0.0 if rng.random() < 0.5 else float(rng.uniform(0.1, 0.45))
    world = World(seed=int(seed), mpp=float(mpp), preset=chosen, glass_fraction=gf)
    win = render_window(world, int(origin[0]), int(origin[1]), h, w)
    inst, types = relabel(win)
    return SyntheticTile(
        image=win.image,
        inst_map=inst,
        type_map=types[inst],
        cells=cell_list(inst, types),
        tissue=world.tissue_label,
        world=world,
    )
