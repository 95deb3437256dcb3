"""Resume journal: the per-tile cells of an interrupted run, committed atomically in chunks.

    j = Journal.open(out_dir / ".resume", fingerprint, resume=True)
    for row, col, cells, extra in j.replay(): ...            # committed tiles, in processing order
    j.append(row, col, cells, extra)   # buffered; committed every `chunk_tiles` tiles or `chunk_seconds` s
    j.commit(); j.discard()                                   # at the end of a successful run

Chunks are committed every `chunk_tiles` tiles and, with `chunk_seconds`, whenever that much time passed since
the last commit (so a slide of fewer tiles than `chunk_tiles`, or a slow one, keeps its progress too).
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
import time
import zipfile
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


def _pack(batches: list[CellBatch], out: dict[str, np.ndarray], transform: tuple | None) -> None:
    """Struct of arrays for one chunk.

    With `transform` = (scale, (ox, oy)) the slide contours are not stored: they are `region * scale + offset`
    (CellBatch.from_tile), recomputed bit-identically from the integral region contours, which are stored as
    int32 (a quarter of the bytes of both float64 ring sets)."""
    cat = CellBatch.concat(batches) if batches else CellBatch.empty()
    for name in _ARRAYS:
        out[name] = np.asarray(getattr(cat, name))
    region = np.concatenate(cat.contours_region) if cat.contours_region else np.zeros((0, 2))
    out["contours_region_len"] = np.array([len(r) for r in cat.contours_region], np.int64)
    derive = (
        transform is not None
        and np.array_equal(region, np.rint(region))
        and np.abs(region).max(initial=0) < 2**31
    )
    out["contours_region"] = region.astype(np.int32) if derive else region
    if not derive:
        out["contours_len"] = np.array([len(r) for r in cat.contours], np.int64)
        out["contours"] = np.concatenate(cat.contours) if cat.contours else np.zeros((0, 2))
    if cat.embedding is not None:
        out["embedding"] = cat.embedding


def _split(flat: np.ndarray, lengths: np.ndarray) -> list[np.ndarray]:
    return np.split(flat, np.cumsum(lengths)[:-1]) if len(lengths) else []


def _load_chunk(path: Path, transform: tuple | None) -> dict[str, Any]:
    """Every array of a chunk, read once (an NpzFile re-reads its zip member on every access)."""
    with np.load(path, allow_pickle=False) as z:
        d = {k: z[k] for k in z.files}
    region = d["contours_region"].astype(np.float64)
    d["contours_region"] = _split(region, d["contours_region_len"])
    if "contours" in d:
        d["contours"] = _split(d["contours"], d["contours_len"])
    else:
        if transform is None:
            raise InputError(f"--resume: journal chunk {path} needs the slide transform to rebuild contours")
        scale, offset = transform
        d["contours"] = [c * scale + offset for c in d["contours_region"]]
    return d


def _take(d: dict[str, Any], lo: int, hi: int) -> CellBatch:
    kw = {name: d[name][lo:hi] for name in _ARRAYS}
    return CellBatch(
        contours=d["contours"][lo:hi],
        contours_region=d["contours_region"][lo:hi],
        embedding=d["embedding"][lo:hi] if "embedding" in d else None,
        **kw,
    )


class Journal:
    def __init__(
        self,
        folder: Path,
        fingerprint: dict[str, Any],
        chunk_tiles: int = 32,
        transform: tuple | None = None,
        chunk_seconds: float | None = None,
    ):
        self.folder, self.fingerprint, self.chunk_tiles = Path(folder), fingerprint, max(1, int(chunk_tiles))
        # by time as well: a slow slide (or one of fewer tiles than chunk_tiles) still keeps its progress
        self.chunk_seconds = chunk_seconds
        self._last_commit = time.monotonic()
        self.transform = transform  # (scale, (ox, oy)) region px -> slide px, as SourceInfo; see _pack
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
        cls,
        folder: str | Path,
        fingerprint: dict[str, Any],
        resume: bool,
        chunk_tiles: int = 32,
        transform: tuple | None = None,
        chunk_seconds: float | None = None,
    ) -> Journal:
        j = cls(Path(folder), fingerprint, chunk_tiles, transform, chunk_seconds)
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
                d = _load_chunk(path, self.transform)
            except (OSError, ValueError, KeyError, zipfile.BadZipFile) as exc:
                raise InputError(
                    f"--resume: journal chunk {path} is unreadable ({exc}); run without --resume"
                ) from exc
            starts = np.concatenate([[0], np.cumsum(d["counts"])])
            extra_names = [k for k in d if k.startswith("extra_")]
            for i, (row, col) in enumerate(d["tiles"]):
                extra = {n[len("extra_") :]: d[n][i] for n in extra_names}
                yield int(row), int(col), _take(d, int(starts[i]), int(starts[i + 1])), extra

    def done(self) -> set[tuple[int, int]]:
        return {(int(r), int(c)) for chunk in self.chunks for r, c in chunk["tile_list"]}

    def append(
        self, row: int, col: int, cells: CellBatch, extra: dict[str, np.ndarray] | None = None
    ) -> None:
        self._buf.append((row, col, cells, extra or {}))
        due = self.chunk_seconds is not None and time.monotonic() - self._last_commit >= self.chunk_seconds
        if len(self._buf) >= self.chunk_tiles or due:
            self.commit()

    def commit(self) -> None:
        if not self._buf:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        arrays: dict[str, np.ndarray] = {
            "tiles": np.array([(r, c) for r, c, _, _ in self._buf], np.int32).reshape(-1, 2),
            "counts": np.array([len(b) for _, _, b, _ in self._buf], np.int64),
        }
        _pack([b for _, _, b, _ in self._buf], arrays, self.transform)
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
        self._last_commit = time.monotonic()
        if self._kill_after is not None and self.committed_tiles >= self._kill_after:
            os.kill(os.getpid(), signal.SIGKILL)

    def discard(self) -> None:
        """Remove the journal (after a successful run, or when starting over)."""
        self._buf.clear()
        self.chunks = []
        shutil.rmtree(self.folder, ignore_errors=True)
