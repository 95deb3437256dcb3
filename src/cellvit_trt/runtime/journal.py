"""Resume journal: the per-tile cells of an interrupted run, committed atomically in chunks.

    j = Journal.open(out_dir / ".resume", fingerprint, resume=True)
    for row, col, cells, extra in j.replay(): ...            # committed tiles, in processing order
    j.append(row, col, cells, extra)              # buffered; a chunk is committed every `chunk_tiles` tiles
    j.commit(); j.discard()                                   # at the end of a successful run

A chunk is one `.npz` written with an atomic rename, then the manifest (also atomic) lists it: a kill at any
moment leaves either the old or the new manifest, never a half chunk. Tiles after the last commit are simply
processed again. Replaying the committed tiles into a fresh merge, in the same order, then continuing with the
remaining tiles gives exactly the cells of an uninterrupted run (the merge is deterministic in its input
order).

The fingerprint (input file identity, model identity, settings that change cells) must match to resume;
otherwise the user is told what differs.

Fault injection for tests: `CELLVIT_TRT_FAULT_KILL_AFTER_TILES=K` SIGKILLs the process right after the first
commit that covers >= K tiles (a real kill: no cleanup, no atexit).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from cellvit_trt.errors import InputError
from cellvit_trt.io import atomic_path, write_json
from cellvit_trt.runtime.cells import CellBatch

FORMAT = "cellvit-trt-journal/1"
_ARRAYS = (
    "centroid",
    "bbox",
    "area",
    "type",
    "type_prob",
    "tile",
    "cell_status",
    "edge",
    "bbox_region",
    "id",
)


def _pack(batches: list[CellBatch], prefix: str, out: dict[str, np.ndarray]) -> None:
    cat = CellBatch.concat(batches) if batches else CellBatch.empty()
    for name in _ARRAYS:
        out[f"{prefix}{name}"] = np.asarray(getattr(cat, name))
    for name in ("contours", "contours_region"):
        rings = getattr(cat, name)
        out[f"{prefix}{name}_len"] = np.array([len(r) for r in rings], np.int64)
        out[f"{prefix}{name}"] = np.concatenate(rings) if rings else np.zeros((0, 2))
    if cat.embedding is not None:
        out[f"{prefix}embedding"] = cat.embedding


def _unpack(z: Any, lo: int, hi: int, offs: dict[str, np.ndarray]) -> CellBatch:
    def rings(name: str) -> list[np.ndarray]:
        o = offs[name]
        flat = z[name]
        return [flat[o[i] : o[i + 1]] for i in range(lo, hi)]

    kw = {name: z[name][lo:hi] for name in _ARRAYS}
    emb = z["embedding"][lo:hi] if "embedding" in z.files else None
    return CellBatch(
        contours=rings("contours"), contours_region=rings("contours_region"), embedding=emb, **kw
    )


class Journal:
    def __init__(self, folder: Path, fingerprint: dict[str, Any], chunk_tiles: int = 32):
        self.folder, self.fingerprint, self.chunk_tiles = Path(folder), fingerprint, max(1, int(chunk_tiles))
        self.chunks: list[dict[str, Any]] = []
        self._buf: list[tuple[int, int, CellBatch, dict[str, np.ndarray]]] = []
        self.committed_tiles = 0
        kill = os.environ.get("CELLVIT_TRT_FAULT_KILL_AFTER_TILES")
        self._kill_after = int(kill) if kill else None

    @property
    def manifest_path(self) -> Path:
        return self.folder / "manifest.json"

    @classmethod
    def open(
        cls, folder: str | Path, fingerprint: dict[str, Any], resume: bool, chunk_tiles: int = 32
    ) -> Journal:
        j = cls(Path(folder), fingerprint, chunk_tiles)
        if not resume:
            j.discard()
            return j
        if not j.manifest_path.is_file():
            return j  # nothing to resume: a fresh run
        try:
            manifest = json.loads(j.manifest_path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise InputError(
                f"--resume: journal {j.manifest_path} is unreadable ({exc}); run without --resume"
            ) from exc
        if manifest.get("format") != FORMAT:
            raise InputError(
                f"--resume: journal {j.manifest_path} has format {manifest.get('format')!r}, "
                f"expected {FORMAT!r}; run without --resume"
            )
        old = manifest.get("fingerprint", {})
        diff = sorted(k for k in set(old) | set(fingerprint) if old.get(k) != fingerprint.get(k))
        if diff:
            details = "; ".join(f"{k}: was {old.get(k)!r}, now {fingerprint.get(k)!r}" for k in diff[:4])
            raise InputError(
                f"--resume: the interrupted run in {j.folder.parent} used a different input, model "
                f"or settings ({details}); run without --resume to start over"
            )
        j.chunks = list(manifest.get("chunks", []))
        j.committed_tiles = sum(c["tiles"] for c in j.chunks)
        return j

    def replay(self) -> Iterator[tuple[int, int, CellBatch, dict[str, np.ndarray]]]:
        """Committed tiles in the order they were processed: (row, col, cells, extra arrays)."""
        for chunk in self.chunks:
            path = self.folder / chunk["file"]
            try:
                z = np.load(path, allow_pickle=False)
            except (OSError, ValueError) as exc:
                raise InputError(
                    f"--resume: journal chunk {path} is unreadable ({exc}); run without --resume"
                ) from exc
            with z:
                counts = z["counts"]
                offs = {
                    n: np.concatenate([[0], np.cumsum(z[f"{n}_len"])])
                    for n in ("contours", "contours_region")
                }
                starts = np.concatenate([[0], np.cumsum(counts)])
                extra_names = [f for f in z.files if f.startswith("extra_")]
                for i, (row, col) in enumerate(z["tiles"]):
                    extra = {n[len("extra_") :]: z[n][i] for n in extra_names}
                    yield int(row), int(col), _unpack(z, int(starts[i]), int(starts[i + 1]), offs), extra

    def done(self) -> set[tuple[int, int]]:
        return {(int(r), int(c)) for chunk in self.chunks for r, c in chunk["tile_list"]}

    def append(
        self, row: int, col: int, cells: CellBatch, extra: dict[str, np.ndarray] | None = None
    ) -> None:
        self._buf.append((row, col, cells, extra or {}))
        if len(self._buf) >= self.chunk_tiles:
            self.commit()

    def commit(self) -> None:
        if not self._buf:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        arrays: dict[str, np.ndarray] = {
            "tiles": np.array([(r, c) for r, c, _, _ in self._buf], np.int32).reshape(-1, 2),
            "counts": np.array([len(b) for _, _, b, _ in self._buf], np.int64),
        }
        _pack([b for _, _, b, _ in self._buf], "", arrays)
        for key in self._buf[0][3]:
            arrays[f"extra_{key}"] = np.stack([e[key] for _, _, _, e in self._buf])
        name = f"chunk-{len(self.chunks):06d}.npz"
        with atomic_path(self.folder / name) as tmp, open(tmp, "wb") as fh:
            np.savez(fh, **arrays)
        self.chunks.append(
            {"file": name, "tiles": len(self._buf), "tile_list": [[r, c] for r, c, _, _ in self._buf]}
        )
        write_json(
            self.manifest_path,
            {"format": FORMAT, "fingerprint": self.fingerprint, "chunks": self.chunks},
            indent=None,
        )
        self.committed_tiles += len(self._buf)
        self._buf.clear()
        if self._kill_after is not None and self.committed_tiles >= self._kill_after:
            os.kill(os.getpid(), signal.SIGKILL)

    def discard(self) -> None:
        """Remove the journal (after a successful run, or when starting over)."""
        self._buf.clear()
        self.chunks = []
        shutil.rmtree(self.folder, ignore_errors=True)
