"""Measuring a command and comparing two cell sets, for benchmarks/bench_e2e_vs_upstream.py.

Standard library + numpy/scipy only (imported by the benchmark and its test in the project's venv).

- `measure(cmd)` runs a command and returns its wall time, the CPU time of its whole process tree and the
  largest peak RSS of one process in the tree. Ray's raylet, GCS and worker processes count too, even though
  they are re-parented away from the command. `measure` starts this file as a wrapper process (`--wrap`). The
  wrapper marks itself a child subreaper (Linux `prctl(PR_SET_CHILD_SUBREAPER)`), so every orphaned
  descendant is re-parented to it and reaped by it. Its `RUSAGE_CHILDREN` then covers the whole tree, and
  each measurement is a fresh process, so `ru_maxrss` belongs to that run alone. It also records the load
  average and the machine's busy CPU seconds (/proc/stat) before and after, so the CPU that other processes
  took during the run is known (`others_cpu_s`).
- `read_cells(path)` loads the centroids and types from an upstream-layout `cell_detection.json`. Both sides
  write that file.
- `agreement(...)` is a detection F1 between two cell sets: one-to-one centroid pairs within a radius, closest
  first.
"""

from __future__ import annotations

import ctypes
import json
import os
import resource
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

PR_SET_CHILD_SUBREAPER = 36
ORPHAN_GRACE_S = 30.0  # how long reparented descendants (e.g. Ray's raylet after shutdown) may take to exit


@dataclass
class Measured:
    rc: int
    wall_s: float
    cpu_s: float  # user + system of the whole process tree
    user_s: float
    sys_s: float
    max_rss_mb: float  # largest peak RSS of a single process in the tree
    loadavg_before: list[float]
    loadavg_after: list[float]
    machine_busy_s: float  # all CPUs of the machine, busy seconds during the run (/proc/stat)
    others_cpu_s: float  # machine_busy_s - cpu_s: what other processes used meanwhile
    orphans_killed: int


def loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def machine_busy_s() -> float:
    """Busy CPU seconds of the whole machine since boot (all CPUs; idle and iowait excluded)."""
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    except OSError:
        return float("nan")
    user, nice, system, _idle, _iowait, irq, softirq = (int(x) for x in fields[:7])
    # steal (the hypervisor's) is not this machine's work; guest time is already inside user/nice
    return (user + nice + system + irq + softirq) / os.sysconf("SC_CLK_TCK")


def _children(pid: int) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        # the command name may contain spaces and parentheses: fields after the last ')'
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            out.append(int(entry))
    return out


def _reap_all(grace_s: float) -> int:
    """Reap every descendant re-parented to this (subreaper) process. Ones still alive after `grace_s` are
    terminated. Returns how many had to be killed."""
    deadline = time.monotonic() + grace_s
    signalled: set[int] = set()
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return len(signalled)
        if pid:
            continue
        now = time.monotonic()
        if now > deadline:
            for child in _children(os.getpid()):
                if child in signalled and now < deadline + 5:
                    continue
                try:
                    os.kill(child, signal.SIGTERM if child not in signalled else signal.SIGKILL)
                except ProcessLookupError:
                    pass
                signalled.add(child)
        time.sleep(0.1)


def _wrap(result_path: Path, cmd: list[str]) -> int:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER) failed")
    load0, busy0 = loadavg(), machine_busy_s()
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd)
    try:
        rc = proc.wait()
    except KeyboardInterrupt:
        proc.send_signal(signal.SIGINT)
        rc = proc.wait()
    wall = time.perf_counter() - t0
    killed = _reap_all(ORPHAN_GRACE_S)
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    busy = machine_busy_s() - busy0
    cpu = ru.ru_utime + ru.ru_stime
    m = Measured(
        rc=rc,
        wall_s=wall,
        cpu_s=cpu,
        user_s=ru.ru_utime,
        sys_s=ru.ru_stime,
        max_rss_mb=ru.ru_maxrss / 1024,
        loadavg_before=load0,
        loadavg_after=loadavg(),
        machine_busy_s=busy,
        others_cpu_s=max(0.0, busy - cpu),
        orphans_killed=killed,
    )
    result_path.write_text(json.dumps(asdict(m)))
    return 0


def measure(cmd: list[str], log: Path | None = None, env: dict[str, str] | None = None) -> Measured:
    """Run `cmd` under the measuring wrapper (see the module docstring); stdout/stderr go to `log`."""
    with tempfile.TemporaryDirectory(prefix="measure-") as tmp:
        result = Path(tmp) / "m.json"
        wrapper = [sys.executable, str(Path(__file__).resolve()), "--wrap", str(result), "--", *cmd]
        with open(log or os.devnull, "ab") as out:
            subprocess.run(wrapper, stdout=out, stderr=subprocess.STDOUT, env=env, check=True)
        return Measured(**json.loads(result.read_text()))


# ---- cell sets
def read_cells(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(centroids [N, 2] as x, y in slide pixels; types [N]) from an upstream-layout cell_detection.json."""
    with open(path) as f:
        cells = json.load(f)["cells"]
    xy = np.array([c["centroid"] for c in cells], np.float64).reshape(-1, 2)
    return xy, np.array([int(c["type"]) for c in cells], np.int64)


def class_counts(types: np.ndarray, names: dict[int, str]) -> dict[str, int]:
    ids, counts = np.unique(types, return_counts=True)
    return {names.get(int(i), str(int(i))): int(n) for i, n in zip(ids, counts, strict=True)}


def agreement(
    ref_xy: np.ndarray, ref_type: np.ndarray, xy: np.ndarray, ty: np.ndarray, radius: float
) -> dict[str, Any]:
    """Detection F1 of two cell sets: one-to-one pairs within `radius`, closest first (greedy on sorted
    distances: exact for near-identical sets, and it scales to whole slides unlike a dense Hungarian)."""
    from scipy.spatial import cKDTree

    n_ref, n = len(ref_xy), len(xy)
    if n_ref == 0 or n == 0:
        return {
            "f1": float("nan") if n_ref == n else 0.0,
            "matched": 0,
            "type_agreement": float("nan"),
            "median_dist_px": float("nan"),
            "same_pixel_fraction": float("nan"),
        }
    pairs = cKDTree(ref_xy).sparse_distance_matrix(cKDTree(xy), radius, output_type="ndarray")
    order = np.argsort(pairs["v"], kind="stable")
    used_a, used_b = np.zeros(n_ref, bool), np.zeros(n, bool)
    ia, ib, dist = [], [], []
    for k in order:
        a, b = int(pairs["i"][k]), int(pairs["j"][k])
        if not used_a[a] and not used_b[b]:
            used_a[a] = used_b[b] = True
            ia.append(a)
            ib.append(b)
            dist.append(float(pairs["v"][k]))
    m = len(ia)
    same = np.all(np.rint(xy[ib]) == np.rint(ref_xy[ia]), axis=1) if m else np.zeros(0, bool)
    return {
        "f1": 2 * m / (n_ref + n),
        "matched": m,
        "type_agreement": float(np.mean(ref_type[ia] == ty[ib])) if m else float("nan"),
        "median_dist_px": float(np.median(dist)) if m else float("nan"),
        # upstream reports rint(centroid); "same pixel" = equal once both are rounded
        "same_pixel_fraction": float(np.mean(same)) if m else float("nan"),
    }


if __name__ == "__main__":
    # wrapper mode: upstream_measure.py --wrap RESULT.json -- CMD...
    if len(sys.argv) < 5 or sys.argv[1] != "--wrap" or sys.argv[3] != "--":
        sys.exit("usage: upstream_measure.py --wrap RESULT.json -- CMD [ARGS...]")
    sys.exit(_wrap(Path(sys.argv[2]), sys.argv[4:]))
