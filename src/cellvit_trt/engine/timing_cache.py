"""The TensorRT timing cache, one file per (TensorRT version, GPU), shared safely between concurrent builds.

Builds read the file once at the start. At the end they take an exclusive lock, merge their cache into what
is on disk now (another build may have saved meanwhile) and replace the file atomically, so no build's
timings are lost and no reader sees half a file (the Polygraphy pattern, backend/trt/loader.py).
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

from cellvit_trt.engine.environment import Environment
from cellvit_trt.engine.filelock import file_lock
from cellvit_trt.io import write_bytes

log = logging.getLogger(__name__)


def timing_cache_path(root: str | Path, env: Environment) -> Path:
    gpu = re.sub(r"[^A-Za-z0-9]+", "-", env.gpu_name).strip("-").lower() or "gpu"
    trt = re.sub(r"[^A-Za-z0-9.]+", "-", env.tensorrt)
    return Path(root) / f"trt-{trt}_{gpu}_sm{env.compute_capability}_{env.sm_count}sm.timing"


def read_timing_cache(path: str | Path) -> bytes:
    """The saved cache bytes, or b'' when there is none yet."""
    path = Path(path)
    with file_lock(path):
        try:
            return path.read_bytes()
        except FileNotFoundError:
            return b""


def attach_timing_cache(config: Any, data: bytes) -> Any:
    """Attach a timing cache made from `data`; one that TensorRT rejects is replaced by an empty one."""
    cache = config.create_timing_cache(data)
    if cache is None or not config.set_timing_cache(cache, False):
        log.warning("the saved timing cache does not fit this TensorRT/GPU; starting an empty one")
        cache = config.create_timing_cache(b"")
        config.set_timing_cache(cache, True)
    return cache


def save_timing_cache(config: Any, path: str | Path) -> int:
    """Merge the config's timing cache into the file at `path` under the lock; returns the bytes written."""
    path = Path(path)
    ours = config.get_timing_cache()
    if ours is None:
        return 0
    with file_lock(path):
        merged = ours
        try:
            on_disk = path.read_bytes()
        except FileNotFoundError:
            on_disk = b""
        if on_disk:
            theirs = config.create_timing_cache(on_disk)
            if theirs is not None and theirs.combine(ours, True):
                merged = theirs
        data = bytes(merged.serialize())
        write_bytes(path, data)
    return len(data)
