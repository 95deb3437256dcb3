"""Memory facts the runtime plans with: this process's resident set, the memory available to it (cgroup limits
included) and, on a GPU, the device's free memory. Linux `/proc` and cgroup files; no psutil needed.

    available_host()            # Available(bytes=..., source='cgroup memory.max minus working set')
    peak_rss_bytes()            # this process's peak resident set (VmHWM)
    DevicePeak(probe).sample()  # device memory in use since start, the largest seen (GPU backends)
"""

from __future__ import annotations

import os
import resource
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# cgroup v1 reports "no limit" as a page-rounded LONG_MAX; anything above 2^60 is no limit
_UNLIMITED = 1 << 60


@dataclass(frozen=True)
class Available:
    bytes: int
    source: str  # what the figure is: "MemAvailable", "cgroup memory.max minus working set", ...

    def describe(self) -> str:
        return f"{gib(self.bytes)} available ({self.source})"


def gib(n: float | None) -> str:
    return "n/a" if n is None else f"{n / 2**30:.2f} GiB"


def peak_rss_bytes() -> int:
    """Peak resident set of this process's own memory (Linux VmHWM; restarted by `reset_peak_rss`).

    Not getrusage's ru_maxrss: that one carries the parent's peak into a child (fork copies the high-water
    mark, exec keeps it), so a run started from a large process would report the parent's peak, and the
    kernel folds the mark into it whenever a thread exits, which `clear_refs` does not undo. getrusage
    (KiB on Linux, bytes on macOS) only where /proc is missing."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


def current_rss_bytes() -> int:
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return peak_rss_bytes()  # not Linux: the best figure there is


def reset_peak_rss() -> bool:
    """Restart this process's peak-RSS counter (Linux >= 4.0, `clear_refs` 5); False where not possible.
    Only for a process that measures itself (the footprint probe), never a user's."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def _meminfo_available(root: Path) -> int | None:
    try:
        for line in (root / "proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _read_int(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    if text == "max":
        return None
    try:
        value = int(text)
    except ValueError:
        return None
    return None if value >= _UNLIMITED else value


def _stat(path: Path, key: str) -> int:
    try:
        for line in path.read_text().splitlines():
            name, _, value = line.partition(" ")
            if name == key:
                return int(value)
    except (OSError, ValueError):
        pass
    return 0


def _cgroup_paths(root: Path) -> tuple[str | None, str | None]:
    """(v2 path, v1 memory path) of this process from /proc/self/cgroup."""
    v2 = v1 = None
    try:
        lines = (root / "proc/self/cgroup").read_text().splitlines()
    except OSError:
        return None, None
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        if parts[0] == "0" and parts[1] == "":
            v2 = parts[2]
        elif "memory" in parts[1].split(","):
            v1 = parts[2]
    return v2, v1


def _cgroup_headroom(root: Path) -> tuple[int, str] | None:
    """The tightest cgroup memory limit on the way up from this process's cgroup, minus what that cgroup
    already uses (less its reclaimable page cache, `inactive_file`); None without a limit."""
    v2, v1 = _cgroup_paths(root)
    best: tuple[int, str] | None = None
    candidates: list[tuple[Path, str, str, str, str]] = []
    fs = root / "sys/fs/cgroup"
    if v2 is not None:
        candidates.append((fs, v2, "memory.max", "memory.current", "inactive_file"))
        candidates.append((fs / "unified", v2, "memory.max", "memory.current", "inactive_file"))
    if v1 is not None:
        candidates.append(
            (fs / "memory", v1, "memory.limit_in_bytes", "memory.usage_in_bytes", "total_inactive_file")
        )
    for base, rel, limit_name, usage_name, inactive in candidates:
        if not base.is_dir():
            continue
        # in a container the process's own cgroup is often mounted as the root: try the path, then its parents
        parts = [p for p in rel.strip("/").split("/") if p]
        for depth in range(len(parts), -1, -1):
            d = base.joinpath(*parts[:depth])
            limit = _read_int(d / limit_name)
            if limit is None:
                continue
            usage = _read_int(d / usage_name) or 0
            used = max(0, usage - _stat(d / "memory.stat", inactive))
            free = max(0, limit - used)
            what = f"cgroup {limit_name} {gib(limit)} minus {gib(used)} in use"
            if best is None or free < best[0]:
                best = (free, what)
    return best


def available_host(root: str | Path = "/") -> Available:
    """Memory this process can still use: the kernel's MemAvailable, or a cgroup's headroom where tighter."""
    root = Path(root)
    avail = _meminfo_available(root)
    cg = _cgroup_headroom(root)
    if cg is not None and (avail is None or cg[0] < avail):
        return Available(cg[0], cg[1])
    if avail is not None:
        return Available(avail, "MemAvailable")
    try:  # not Linux: total physical memory is the most honest fallback
        return Available(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"), "physical memory")
    except (ValueError, OSError, AttributeError):
        return Available(0, "unknown")


class DevicePeak:
    """Device memory in use by the run, the largest seen: free memory at start minus the least free memory
    observed at `sample()` calls (after each batch). TensorRT's context memory, PyTorch's caching allocator
    and ONNX Runtime's CUDA arena all hold their memory between batches, so their peak is seen there. It is
    the device's free memory: another process allocating at the same time would be counted too."""

    def __init__(self, free_bytes: Callable[[], int]):
        self._free = free_bytes
        self.start = free_bytes()
        self.least = self.start

    def sample(self) -> None:
        self.least = min(self.least, self._free())

    @property
    def peak_bytes(self) -> int:
        return max(0, self.start - self.least)

    @classmethod
    def for_device(cls, index: int = 0) -> DevicePeak:
        return cls(lambda: device_free_bytes(index))


def device_free_bytes(index: int = 0) -> int:
    """Free memory of CUDA device `index` (cudaMemGetInfo through the runtime's one CUDA door)."""
    from cellvit_trt.runtime.cuda import api

    api.call("cudaSetDevice", index)
    free, _total = api.call("cudaMemGetInfo")
    return int(free)


def memory_report(backend: Any, plan: dict[str, Any] | None = None) -> dict[str, Any]:
    """Peak host RSS of this process and peak device memory of the backend (None without a GPU), in MiB,
    with the batch plan that was chosen before the run (runtime/budget.py), for summary.json and bench."""
    dev = backend.peak_device_bytes() if hasattr(backend, "peak_device_bytes") else None
    return {
        "peak_host_rss_mb": round(peak_rss_bytes() / 2**20, 1),
        "peak_host_rss_scope": "this process's own memory since it started (VmHWM)",
        "peak_device_mb": None if dev is None else round(dev / 2**20, 1),
        "plan": plan,
    }
