"""PanNuke folds: memory-mapped loading and conversion to instance and type maps.

A fold holds three arrays (the official download nests them as `Fold 1/images/fold1/{images,types}.npy` and
`Fold 1/masks/fold1/masks.npy`; flat folders with the three files work too):

| file | shape, dtype | meaning |
|---|---|---|
| `images.npy` | [N, H, W, 3] float64 (0..255) or uint8 | RGB tiles (256x256 at 40x, 0.25 µm/px) |
| `masks.npy` | [N, H, W, 6] float64 | channels 0-4: instance ids per class (`PANNUKE_TYPES`); 5: background |
| `types.npy` | [N] str | tissue name per tile |

`labels(i)` builds the maps as TIO-IKIM/CellViT `prepare_pannuke.py` does: channel by channel, later channels
overwriting earlier ones, instance ids offset per channel, then made contiguous; the type of a pixel is its
channel + 1 (PanNuke class ids 1..5).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cellvit_trt.errors import InputError
from cellvit_trt.io import atomic_path
from cellvit_trt.metrics.instances import Instances, centroids_of, compact_labels, has_cell_entry

PANNUKE_TYPES = ("Neoplastic", "Inflammatory", "Connective", "Dead", "Epithelial")  # mask channels 0..4
FILES = ("images.npy", "masks.npy", "types.npy")


def _find(root: Path, name: str) -> Path:
    direct = root / name
    if direct.is_file():
        return direct
    found = sorted(p for p in root.rglob(name) if p.is_file() and len(p.relative_to(root).parts) <= 4)
    if not found:
        raise InputError(
            f"PanNuke fold {root}: no {name} found (expected {root / name} or the official "
            f"'Fold N/images|masks/foldN/{name}' layout)"
        )
    if len(found) > 1:
        raise InputError(
            f"PanNuke fold {root}: several {name} files ({', '.join(map(str, found))}); point at one fold"
        )
    return found[0]


def _load(path: Path, mmap: bool) -> np.ndarray:
    try:
        return np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except ValueError as exc:
        raise InputError(
            f"{path}: not a plain numpy array file ({exc}); pickled/object arrays are refused"
        ) from exc
    except OSError as exc:
        raise InputError(f"{path}: cannot read ({exc})") from exc


def pannuke_labels(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(inst_map int32 [H,W] with ids 1..K, type_map int32 [H,W], types int64 [K]) from one [H,W,6] mask."""
    h, w = mask.shape[:2]
    inst = np.zeros(h * w, np.int64)
    src = np.zeros(h * w, np.int8)  # channel each pixel came from
    offset = 0
    for j in range(5):
        ch = np.asarray(mask[..., j])
        if ch.dtype.kind == "f":
            ch = ch.astype(np.int64)
        lab, ids = compact_labels(ch)
        hit = lab > 0
        inst[hit] = lab[hit] + offset
        src[hit] = j + 1
        offset += ids.shape[0]
    lab, _ = compact_labels(inst.reshape(h, w))
    k = int(lab.max()) if lab.size else 0
    types = np.zeros(k, np.int64)
    hit = lab > 0
    types[lab[hit] - 1] = src[hit]
    type_map = np.where(hit, src, 0).astype(np.int32)
    return lab.reshape(h, w).astype(np.int32), type_map.reshape(h, w), types


@dataclass(frozen=True)
class PanNukeFold:
    """One fold, memory-mapped. Index it per tile; nothing is loaded whole."""

    root: Path
    images: np.ndarray  # [N, H, W, 3]
    masks: np.ndarray  # [N, H, W, 6]
    tissues: np.ndarray  # [N] str

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def tile_shape(self) -> tuple[int, int]:
        return int(self.images.shape[1]), int(self.images.shape[2])

    def image(self, i: int) -> np.ndarray:
        return _to_uint8(self.images[i])

    def batch(self, start: int, stop: int) -> np.ndarray:
        """uint8 [n, H, W, 3] tiles start..stop-1."""
        return _to_uint8(self.images[start:stop])

    def tissue(self, i: int) -> str:
        return str(self.tissues[i])

    def labels(self, i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return pannuke_labels(self.masks[i])

    def instances(self, i: int) -> Instances:
        inst, _, types = self.labels(i)
        lab = inst.reshape(-1)
        ids = np.arange(1, types.shape[0] + 1, dtype=np.int64)
        det = has_cell_entry(inst, ids.shape[0])
        return Instances(inst, ids, types, centroids_of(lab, ids.shape[0], inst.shape[1]), lab, det)

    def __iter__(self) -> Iterator[tuple[np.ndarray, Instances, str]]:
        for i in range(len(self)):
            yield self.image(i), self.instances(i), self.tissue(i)


def _to_uint8(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x)
    if x.dtype == np.uint8:
        return np.ascontiguousarray(x)
    return np.clip(x, 0, 255).astype(np.uint8)  # upstream casts with astype(uint8); values are whole numbers


def open_pannuke_fold(path: str | Path, mmap: bool = True) -> PanNukeFold:
    """Open a fold folder (flat or official nested layout), checking shapes, dtypes and counts."""
    root = Path(path)
    if not root.is_dir():
        raise InputError(f"PanNuke fold {root}: not a folder")
    paths = {name: _find(root, name) for name in FILES}
    images = _load(paths["images.npy"], mmap)
    masks = _load(paths["masks.npy"], mmap)
    tissues = _load(paths["types.npy"], False)
    p_img, p_msk, p_typ = paths["images.npy"], paths["masks.npy"], paths["types.npy"]
    if images.ndim != 4 or images.shape[-1] != 3:
        raise InputError(f"{p_img}: expected images [N, H, W, 3], got shape {images.shape}")
    if images.dtype.kind not in "uif":
        raise InputError(f"{p_img}: expected numeric pixels, got dtype {images.dtype}")
    if masks.ndim != 4 or masks.shape[-1] != 6:
        raise InputError(
            f"{p_msk}: expected masks [N, H, W, 6] (5 class channels + background), got shape {masks.shape}"
        )
    if masks.dtype.kind not in "uif":
        raise InputError(f"{p_msk}: expected numeric instance ids, got dtype {masks.dtype}")
    if masks.shape[:3] != images.shape[:3]:
        raise InputError(
            f"{p_msk}: shape {masks.shape[:3]} (N, H, W) differs from {p_img}'s {images.shape[:3]}"
        )
    if tissues.ndim != 1 or tissues.shape[0] != images.shape[0]:
        raise InputError(
            f"{p_typ}: expected one tissue name per image ({images.shape[0]}), got shape {tissues.shape}"
        )
    if tissues.dtype.kind not in "US":
        raise InputError(f"{p_typ}: expected tissue names (strings), got dtype {tissues.dtype}")
    if tissues.dtype.kind == "S":
        tissues = tissues.astype(str)
    return PanNukeFold(root, images, masks, tissues)


def write_pannuke_fold(
    path: str | Path,
    images: np.ndarray,
    inst_maps: Sequence[np.ndarray],
    type_maps: Sequence[np.ndarray],
    tissues: Sequence[str],
    dtype: str = "float64",
) -> Path:
    """Write a fold in the flat PanNuke layout (for tests, demos and synthetic data). Each file is atomic.

    An instance goes to the mask channel of its majority type (types 1..5); type-0 instances are left out.
    """
    root = Path(path)
    images = np.asarray(images)
    n = images.shape[0]
    if len(inst_maps) != n or len(type_maps) != n or len(tissues) != n:
        raise InputError(
            f"write_pannuke_fold: {n} images but {len(inst_maps)} instance maps, "
            f"{len(type_maps)} type maps and {len(tissues)} tissue names"
        )
    masks = np.zeros(images.shape[:3] + (6,), dtype)
    for i in range(n):
        inst = Instances.from_maps(inst_maps[i], type_maps[i], name=f"tile {i}")
        lab = inst.labels().reshape(inst.shape)
        type_px = np.concatenate([[0], inst.types])[lab]
        id_px = np.concatenate([[0], inst.ids])[lab]
        for t in range(1, 6):
            masks[i, ..., t - 1] = np.where(type_px == t, id_px, 0)
        masks[i, ..., 5] = lab == 0
    root.mkdir(parents=True, exist_ok=True)
    for name, arr in (
        ("images.npy", images.astype(dtype)),
        ("masks.npy", masks),
        ("types.npy", np.asarray([str(t) for t in tissues])),
    ):
        with atomic_path(root / name) as tmp, open(tmp, "wb") as fh:
            np.save(fh, arr)
    return root
