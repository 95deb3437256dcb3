"""Tissue class per processed tile: `tissue_tiles.csv` (streamed) and a JSON digest at close.

    row,col,x,y,width,height,tissue_id,tissue_name,probability     # x..height: the tile footprint, level-0 px
    tissue_tiles.json: {"tissue_names": [...], "tiles": N, "counts": {name: n}, "mean_probabilities": {...}}

The caller passes the tissue classifier's logits of each tile (softmax here).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cellvit_trt.io import write_json
from cellvit_trt.runtime.writers.base import StreamFile, csv_text


class TissueTileWriter:
    def __init__(
        self, csv_path: str | Path, json_path: str | Path, names: tuple[str, ...], grid, info
    ) -> None:
        self.names, self.grid, self.info = tuple(names), grid, info
        self.json_path = Path(json_path)
        self._sum: np.ndarray | None = None
        self._counts: dict[str, int] = {}
        self.tiles = 0
        self._file = StreamFile(csv_path, "w", encoding="utf-8", newline="")
        self._file.fh.write("row,col,x,y,width,height,tissue_id,tissue_name,probability\n")

    def _name(self, i: int) -> str:
        return self.names[i] if i < len(self.names) else f"tissue_{i}"

    def add(self, row: int, col: int, logits: np.ndarray) -> None:
        z = np.asarray(logits, np.float64).ravel()
        p = np.exp(z - z.max())
        p /= p.sum()
        best = int(np.argmax(p))
        y0, x0 = self.grid.origin(row, col)
        (x, y), size = self.info.to_slide((x0, y0)), self.grid.tile_size * self.info.scale
        name = self._name(best)
        self._file.fh.write(
            f"{row},{col},{x:.2f},{y:.2f},{size:.2f},{size:.2f},{best},{csv_text(name)},{p[best]:.4f}\n"
        )
        self._sum = p if self._sum is None else self._sum + p
        self._counts[name] = self._counts.get(name, 0) + 1
        self.tiles += 1

    def close(self, **_: object) -> None:
        mean = (self._sum / self.tiles) if self.tiles else np.zeros(0)
        write_json(
            self.json_path,
            {
                "tissue_names": list(self.names),
                "tiles": self.tiles,
                "counts": self._counts,
                "mean_probabilities": {self._name(i): round(float(v), 4) for i, v in enumerate(mean)},
            },
        )
        self._file.close()

    def abort(self) -> None:
        self._file.abort()
