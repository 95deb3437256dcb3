"""The one folder where cellvit-trt keeps what it can rebuild: engines, timing caches, ONNX Runtime
optimised graphs, measured footprints and Numba's compiled kernels (each in its own subfolder)."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["default_cache_root"]


def default_cache_root() -> Path:
    """`$CELLVIT_TRT_CACHE`, else `$XDG_CACHE_HOME/cellvit-trt`, else `~/.cache/cellvit-trt`."""
    if env := os.environ.get("CELLVIT_TRT_CACHE"):
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "cellvit-trt"
