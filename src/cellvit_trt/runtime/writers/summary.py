"""The run summary JSON: counts per class, plus whatever the pipeline reports (timings, settings, tissue).

write_summary(path, summary, counts, classes)   # adds "cells_per_class" and "versions", writes atomically
"""

from __future__ import annotations

import importlib.metadata
import platform
from pathlib import Path
from typing import Any

from cellvit_trt import __version__
from cellvit_trt.io import write_json
from cellvit_trt.runtime.writers.base import ClassTable

_PACKAGES = (
    "numpy",
    "opencv-python-headless",
    "numba",
    "shapely",
    "openslide-python",
    "openslide-bin",
    "tiffslide",
    "tifffile",
    "simplejpeg",
    "onnxruntime",
    "onnxruntime-gpu",
    "tensorrt",
    "cuda-python",
    "torch",
    "pyarrow",
)


def versions() -> dict[str, str]:
    out = {"cellvit-trt": __version__, "python": platform.python_version()}
    for name in _PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return out


def write_summary(
    path: str | Path, summary: dict[str, Any], counts: dict[int, int], classes: ClassTable
) -> dict:
    doc = dict(summary)
    doc["cells_per_class"] = {classes.name(t): n for t, n in sorted(counts.items())}
    doc["cells_total"] = int(sum(counts.values()))
    doc.setdefault("versions", versions())
    write_json(path, doc)
    return doc
