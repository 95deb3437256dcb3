"""Numba's on-disk cache in a folder named after the package's kernel sources.

Numba drops a function's cached machine code when that function's own file changes (its index keeps the
file's mtime and size), not when a function it calls changes in another file, although the callee was compiled
into it (every `njit` callee is, and `inline="always"` ones at the Numba IR level). After a `git pull` or an
in-place edit that touches only a callee, the caller would go on running the old code and give other cells
than the source says. So the kernels of this package are cached under
`<base>/cellvit-trt-<hash of every source file of the packages given>`: any edit gives a fresh folder.

`<base>` is NUMBA_CACHE_DIR when set, else `numba/` in the package's cache root (`$CELLVIT_TRT_CACHE`, else
`~/.cache/cellvit-trt`, as for engines). Folders of older sources are left in place (another checkout may
still use them); delete them at will. Where that folder cannot be created (a read-only home), Numba falls
back to its own places (`__pycache__` beside the sources, then its user-wide cache), unkeyed.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterator
from pathlib import Path

from cellvit_trt.cache_root import default_cache_root

__all__ = ["source_key", "cache_dir", "keyed_cache"]

_PACKAGE = Path(__file__).resolve().parent
#: Packages whose `njit(cache=True)` functions call only each other and NumPy.
JIT_PACKAGES = (_PACKAGE / "kernels", _PACKAGE / "synthetic")


def source_key(packages: tuple[Path, ...] = JIT_PACKAGES) -> str:
    """16 hex digits of the SHA-256 of every .py file in `packages` (names and contents, in name order)."""
    digest = hashlib.sha256()
    for folder in packages:
        for path in sorted(folder.glob("*.py")):
            digest.update(f"{folder.name}/{path.name}\0".encode())
            digest.update(path.read_bytes())
            digest.update(b"\0")
    return digest.hexdigest()[:16]


def cache_dir(packages: tuple[Path, ...] = JIT_PACKAGES) -> Path:
    """Where the kernels of `packages` cache their machine code (see the module doc)."""
    from numba import config

    base = Path(config.CACHE_DIR) if config.CACHE_DIR else default_cache_root() / "numba"
    return base / f"cellvit-trt-{source_key(packages)}"


@contextlib.contextmanager
def keyed_cache(packages: tuple[Path, ...] = JIT_PACKAGES) -> Iterator[Path]:
    """Functions decorated with `njit(cache=True)` inside this block (that is, in modules first imported
    here) cache under `cache_dir(packages)`; Numba's setting is restored after, for other code."""
    from numba import config

    saved = config.CACHE_DIR
    path = cache_dir(packages)
    config.CACHE_DIR = str(path)
    try:
        yield path
    finally:
        config.CACHE_DIR = saved
