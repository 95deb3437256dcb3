"""Cell embeddings as a `.npy` written in chunks, plus an index (row -> cell id).

    embeddings.npy         float16 (default) or float32 [N, E]; row i is the cell in row i of the index
    embeddings_index.csv   row,cell_id,x,y (level-0 centroid)

The `.npy` header is reserved at open with room for any N and rewritten with the final shape at close
(numpy pads headers with spaces, so readers accept it); rows are appended as raw little-endian data. Nothing
is copied at close, and the file appears under its name only then.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cellvit_trt.errors import InputError
from cellvit_trt.runtime.cells import CellBatch
from cellvit_trt.runtime.writers.base import StreamFile

HEADER_BYTES = 128  # magic (6) + version (2) + length (2) + dict padded with spaces; room for 20-digit shapes


def npy_header(dtype: np.dtype, shape: tuple[int, ...]) -> bytes:
    text = repr({"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False, "shape": shape})
    body = text.encode("latin1")
    pad = HEADER_BYTES - 10 - len(body) - 1
    if pad < 0:
        raise ValueError(f"npy header too long for shape {shape}")
    return b"\x93NUMPY\x01\x00" + (HEADER_BYTES - 10).to_bytes(2, "little") + body + b" " * pad + b"\n"


class EmbeddingWriter:
    def __init__(self, path: str | Path, index_path: str | Path, dtype: str = "float16") -> None:
        if dtype not in ("float16", "float32"):
            raise InputError(f"embeddings dtype: expected float16 or float32, got {dtype!r}")
        self.dtype = np.dtype(dtype).newbyteorder("<")
        self.dim: int | None = None
        self.rows = 0
        self._npy = StreamFile(path, "wb")
        self._index = StreamFile(index_path, "w", encoding="utf-8")
        self._npy.fh.write(npy_header(self.dtype, (0, 0)))
        self._index.fh.write("row,cell_id,x,y\n")

    def write(self, batch: CellBatch) -> None:
        if not len(batch):
            return
        if batch.embedding is None:
            raise InputError("embeddings output: the cells carry no embedding (the model exports no tokens)")
        emb = np.ascontiguousarray(batch.embedding, dtype=self.dtype)
        if self.dim is None:
            self.dim = emb.shape[1]
        elif emb.shape[1] != self.dim:
            raise InputError(f"embeddings output: width changed from {self.dim} to {emb.shape[1]}")
        self._npy.fh.write(emb.tobytes())
        lines = [
            f"{self.rows + i},{int(c)},{x:.2f},{y:.2f}"
            for i, (c, (x, y)) in enumerate(zip(batch.id, batch.centroid, strict=True))
        ]
        self._index.fh.write("\n".join(lines) + "\n")
        self.rows += len(batch)

    def close(self, **_: object) -> None:
        self._npy.fh.seek(0)
        self._npy.fh.write(npy_header(self.dtype, (self.rows, self.dim or 0)))
        self._npy.close()
        self._index.close()

    def abort(self) -> None:
        self._npy.abort()
        self._index.abort()
