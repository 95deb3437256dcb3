"""Numba's cache must not serve a caller compiled against an older callee (`cellvit_trt.jit_cache`).

Two processes compile a caller in one file and its callee in another into one NUMBA_CACHE_DIR; between them
only the callee's file changes. Numba alone would load the caller's stale machine code in the second process
(its index checks the caller's file only); under `keyed_cache` the second process must see the new callee.
"""

from __future__ import annotations

import importlib
import inspect
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import cellvit_trt.kernels as kernels
from cellvit_trt.jit_cache import JIT_PACKAGES, cache_dir, source_key

_RUN = """
import sys
from pathlib import Path
sys.path.insert(0, {root!r})
from cellvit_trt.jit_cache import keyed_cache
with keyed_cache((Path({root!r}) / "pkg",)):
    import pkg.caller
print(pkg.caller.run(3))
"""


def _write_callee(pkg: Path, factor: int) -> None:
    (pkg / "callee.py").write_text(
        textwrap.dedent(f"""
        from numba import njit

        @njit(cache=True, inline="always")
        def scale(x):
            return x * {factor}
        """)
    )


def _run(root: Path) -> int:
    env = {**os.environ, "NUMBA_CACHE_DIR": str(root / "cache")}
    cmd = [sys.executable, "-c", _RUN.format(root=str(root))]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return int(done.stdout.split()[-1])


def test_a_changed_callee_is_recompiled_into_its_caller(tmp_path: Path) -> None:
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "caller.py").write_text(
        textwrap.dedent("""
        from numba import njit

        from pkg.callee import scale

        @njit(cache=True)
        def run(x):
            return scale(x) + 1
        """)
    )
    _write_callee(pkg, 2)
    assert _run(tmp_path) == 7
    _write_callee(pkg, 5)  # the caller's file is untouched
    assert _run(tmp_path) == 16


def test_kernels_cache_under_their_source_key() -> None:
    key = source_key()
    assert len(key) == 16
    path = kernels.postprocess.watershed_seeded_into._cache._cache_path
    assert Path(path).is_relative_to(cache_dir()), path
    assert f"cellvit-trt-{key}" in Path(path).parts
    assert all(folder.is_dir() and any(folder.glob("*.py")) for folder in JIT_PACKAGES)


def test_every_cached_kernel_of_the_packages_is_keyed() -> None:
    """A module whose first import escaped `keyed_cache` (not reached from its package's __init__) would cache
    its kernels unkeyed: every `njit(cache=True)` dispatcher of the packages must live under the key."""
    keyed = cache_dir()
    seen = 0
    for folder in JIT_PACKAGES:
        importlib.import_module(f"cellvit_trt.{folder.name}")
        for path in sorted(folder.glob("*.py")):
            module = importlib.import_module(f"cellvit_trt.{folder.name}.{path.stem}")
            for name, obj in inspect.getmembers(module):
                cache = getattr(obj, "_cache", None)
                if getattr(obj, "__module__", None) != module.__name__ or cache is None:
                    continue
                if hasattr(cache, "_cache_path"):  # a NullCache (cache=False) has none
                    seen += 1
                    assert Path(cache._cache_path).is_relative_to(keyed), f"{module.__name__}.{name}"
    assert seen > 50  # the kernels and the synthetic targets


def test_the_key_follows_every_source_file(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    for folder in (a, b):
        folder.mkdir()
        (folder / "x.py").write_text("x = 1\n")
    before = source_key((a, b))
    (b / "x.py").write_text("x = 2\n")
    assert source_key((a, b)) != before
    (b / "x.py").write_text("x = 1\n")
    assert source_key((a, b)) == before
    (b / "y.py").write_text("")
    assert source_key((a, b)) != before
