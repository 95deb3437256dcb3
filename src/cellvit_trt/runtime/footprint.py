"""What a model costs in memory on a backend at a tile size, measured once in a fresh process and cached.

    fp = footprint(spec, model_file, kind, cache_dir)    # Footprint(host_fixed=..., host_per_tile=..., ...)

The measurement runs `python -m cellvit_trt.runtime.footprint` with the same `open_backend` arguments as the
run: it activates the backend, runs batches of 1 and 2 synthetic tissue tiles and post-processes one tile,
reading its own peak resident set (VmHWM, restarted with `clear_refs`) and, on a GPU, the device's
free memory after each step. The per-tile cost is the difference between the batches, so the process's base
(Python, libraries, weights, the session) and the batch-proportional part are told apart. Only a fresh
process gives clean figures: the run's own already holds other things, and a caller's process must never
have its peak counter restarted.

Results are cached as JSON under `<cache>/footprints/`, keyed by the model file's SHA-256, the backend and its
options, and the package and library versions: measured once per model/backend/tile size.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from cellvit_trt.errors import CellViTTRTError

log = logging.getLogger(__name__)

SCHEMA = 2  # bump when what the probe measures changes: cached footprints are measured again
PROBE_TIMEOUT_S = 1800  # a large model on a CPU takes minutes per tile; never hang a run forever


class FootprintError(CellViTTRTError):
    """The footprint probe could not measure (its process failed or was killed)."""


@dataclass(frozen=True)
class Footprint:
    """Bytes. `host_fixed`: the probe process with the backend active (libraries, weights, session) and its
    largest transient while loading. `host_per_tile`: extra peak per tile of a batch (activations, inputs,
    outputs). `post_per_worker`: extra peak of post-processing one tile (once per post-processing thread).
    `tile_bytes`: one tile's pixels plus its output maps (what the queues hold per tile). `device_*`: the
    same on the GPU (None on CPU backends). `notes`: what could not be measured and what was assumed."""

    host_fixed: int
    host_per_tile: int
    post_per_worker: int
    tile_bytes: int
    tile_size: int
    backend: str
    device_fixed: int | None = None
    device_per_tile: int | None = None
    integrated: bool | None = None  # the GPU shares the host's memory (Jetson)
    probe_peak: int = 0  # the probe process's own peak (what measuring once cost)
    notes: list[str] = field(default_factory=list)
    measured_at: str = ""
    key: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Footprint:
        names = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in d.items() if k in names})


def model_file(backend: Any) -> Path | None:
    """The file a backend runs (engine, ONNX graph or checkpoint)."""
    for attr in ("engine_path", "onnx_path", "checkpoint"):
        p = getattr(backend, attr, None)
        if p is not None:
            return Path(p)
    return None


def _library_versions() -> dict[str, str]:
    from importlib import metadata

    out = {}
    for dist in ("onnxruntime", "onnxruntime-gpu", "tensorrt", "torch"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return out


def cache_key(file: Path, kind: str, spec: dict[str, Any]) -> str:
    from cellvit_trt import __version__
    from cellvit_trt.io import sha256_file

    what = {
        "schema": SCHEMA,
        "model_sha256": sha256_file(file),
        "backend": kind,
        "options": {k: v for k, v in spec.items() if k not in ("model", "cache_dir", "batch")},
        "package": __version__,
        "libraries": _library_versions(),
    }
    return hashlib.sha256(json.dumps(what, sort_keys=True, default=str).encode()).hexdigest()[:24]


def footprint(
    spec: dict[str, Any], file: Path, kind: str, cache_dir: str | Path | None = None, remeasure: bool = False
) -> Footprint:
    """The cached footprint for this model/backend/options, measured first where there is none."""
    from cellvit_trt.io import write_json

    root = Path(cache_dir) if cache_dir else _default_root()
    key = cache_key(file, kind, spec)
    path = root / "footprints" / f"{key}.json"
    if path.is_file() and not remeasure:
        try:
            return Footprint.from_dict(json.loads(path.read_text()))
        except (ValueError, TypeError) as exc:
            log.warning("footprint cache %s is unreadable (%s); measuring again", path, exc)
    log.warning(
        "measuring the memory footprint of %s on %s (once; cached in %s)", file.name, kind, path.parent
    )
    fp = measure(spec)
    fp = Footprint.from_dict({**fp.to_dict(), "key": key})
    write_json(path, fp.to_dict())
    return fp


def _default_root() -> Path:
    from cellvit_trt.cache_root import default_cache_root

    return default_cache_root()


def measure(spec: dict[str, Any], timeout_s: float = PROBE_TIMEOUT_S) -> Footprint:
    """Run the probe in a fresh Python process; what it recorded before dying still counts (see `_result`)."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="cellvit-footprint-") as tmp:
        out = Path(tmp) / "probe.json"
        cmd = [sys.executable, "-m", "cellvit_trt.runtime.footprint", "--spec", json.dumps(spec, default=str)]
        cmd += ["--out", str(out)]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
            rc, err = proc.returncode, proc.stderr
        except subprocess.TimeoutExpired as exc:
            rc, err = None, f"timed out after {timeout_s:.0f} s ({exc.stderr or ''})"
        steps = json.loads(out.read_text()) if out.is_file() else {}
    return _result(steps, rc, err or "")


def _result(steps: dict[str, Any], rc: int | None, err: str) -> Footprint:
    """Turn the probe's recorded steps into a Footprint. A probe killed during the batch of 2 (out of
    memory) still gives one: the per-tile cost is then batch 1 over the loaded backend, an over-estimate."""
    notes: list[str] = []
    if "batch1" not in steps:
        why = f"exit status {rc}" if rc is not None and rc >= 0 else (f"signal {-rc}" if rc else "timeout")
        tail = err.strip().splitlines()[-3:]
        raise FootprintError(
            "the memory probe could not run one tile of this model ("
            + why
            + (": killed, most likely out of memory" if rc is not None and rc < 0 else "")
            + ")"
            + (": " + " | ".join(tail) if tail else "")
        )
    loaded, b1 = steps["loaded"], steps["batch1"]
    b2 = steps.get("batch2")
    if b2 is not None:
        per_tile = max(0, b2["peak"] - b1["peak"])
        fixed = max(loaded["peak"], b1["peak"] - per_tile)
        dev_tile = (
            max(0, b1["device_free"] - b2["device_free"]) if b2.get("device_free") is not None else None
        )
    else:
        notes.append(steps.get("batch2_error") or f"batch 2 not measured (probe ended with {rc})")
        per_tile = max(0, b1["peak"] - loaded["rss"])
        fixed = loaded["peak"]
        dev_tile = None
    dev_fixed = None
    if b1.get("device_free") is not None and steps.get("device_free_start") is not None:
        dev_total = max(0, steps["device_free_start"] - (b2 or b1)["device_free"])
        if dev_tile is None:
            dev_tile, dev_fixed = 0, dev_total
            notes.append("device per-tile cost not separable from one batch: all counted as fixed")
        else:
            dev_fixed = max(0, dev_total - 2 * dev_tile)
    post = steps.get("post", {})
    if not post:
        notes.append("post-processing not measured")
    peaks = [s["peak"] for s in (loaded, b1, b2) if s] + [post.get("rss", 0) + post.get("extra", 0)]
    return Footprint(
        host_fixed=int(fixed),
        host_per_tile=int(per_tile),
        post_per_worker=int(post.get("extra", 0)),
        tile_bytes=int(steps.get("tile_bytes", 0)),
        tile_size=int(steps.get("tile_size", 0)),
        backend=str(steps.get("backend", "")),
        device_fixed=None if dev_fixed is None else int(dev_fixed),
        device_per_tile=None if dev_tile is None else int(dev_tile),
        integrated=steps.get("integrated"),
        probe_peak=int(max(peaks)),
        notes=notes,
        measured_at=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    )


# ---- the probe process ------------------------------------------------------------------------------------
def _probe(spec: dict[str, Any], out: Path) -> None:
    import numpy as np

    from cellvit_trt.io import write_json
    from cellvit_trt.kernels import PostProcessor, PostProcessParams
    from cellvit_trt.runtime.backends import open_backend
    from cellvit_trt.runtime.memory import (
        available_host,
        current_rss_bytes,
        device_free_bytes,
        gib,
        peak_rss_bytes,
        reset_peak_rss,
    )
    from cellvit_trt.synthetic import generate_tile

    steps: dict[str, Any] = {}
    try:  # if memory runs out, the kernel's OOM killer should take this probe, not the run waiting for it
        with open("/proc/self/oom_score_adj", "w") as fh:
            fh.write("1000")
    except OSError:
        pass

    def record() -> None:
        write_json(out, steps)

    backend = open_backend(spec.pop("model"), **spec)
    device = backend.memory_device()
    gpu = device is not None
    if gpu:
        from cellvit_trt.runtime.cuda.device import probe_device

        dev = probe_device(device)
        steps["integrated"] = bool(dev.integrated)
        steps["device_free_start"] = device_free_bytes(device)

    def free() -> int | None:
        return device_free_bytes(device) if gpu else None

    # load the post-processing kernels (Numba's compiled code stays resident in the run too) before measuring,
    # for both HV dtypes a graph may output; their compilation, when the cache is cold, is not the run's cost
    pp = None
    for hv_dtype in (np.float16, np.float32):
        pp = PostProcessor(PostProcessParams())
        blank = np.zeros((64, 64), np.uint8)
        pp.process_tile(blank, np.zeros((2, 64, 64), hv_dtype), blank)
    reset_peak_rss()
    with backend:
        steps["loaded"] = {"peak": peak_rss_bytes(), "rss": current_rss_bytes(), "device_free": free()}
        steps["backend"], steps["tile_size"] = backend.kind, backend.tile_size
        meta = backend.meta
        tiles = np.stack(
            [
                generate_tile(backend.tile_size, seed=17 + i, mpp=meta.target_mpp, glass_fraction=0.0).image
                for i in range(2)
            ]
        )
        params = PostProcessParams.for_magnification(meta.magnification)
        record()
        maps = backend.infer(tiles[:1])
        steps["batch1"] = {"peak": peak_rss_bytes(), "device_free": free()}
        steps["tile_bytes"] = int(tiles[0].nbytes + sum(v[0].nbytes for v in maps.values()))
        record()
        room = available_host().bytes
        if backend.max_batch < 2:
            steps["batch2_error"] = "the model's maximum batch is 1"
        elif 2 * (steps["batch1"]["peak"] - steps["loaded"]["rss"]) > room:
            steps["batch2_error"] = f"batch 2 not measured: it would not fit the {gib(room)} available"
        else:
            try:
                for _ in range(2):  # the second run of a shape may grow an allocator a little: count it
                    maps = backend.infer(tiles)
                steps["batch2"] = {"peak": peak_rss_bytes(), "device_free": free()}
            except Exception as exc:  # noqa: BLE001 - e.g. a GPU out of memory at batch 2: batch 1 still counts
                steps["batch2_error"] = f"batch 2 failed ({type(exc).__name__}: {exc})"
        record()
    pp = PostProcessor(params)
    one = {k: np.ascontiguousarray(v[-1]) for k, v in maps.items()}
    del maps, backend
    pp.process_tile(one["fg"], one["hv"], one["type_map"])  # first touch of this tile's arrays
    rss = current_rss_bytes()
    reset_peak_rss()
    pp.process_tile(one["fg"], one["hv"], one["type_map"])
    steps["post"] = {"rss": rss, "extra": max(0, peak_rss_bytes() - rss)}
    record()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m cellvit_trt.runtime.footprint", description=__doc__)
    p.add_argument("--spec", required=True, help="open_backend arguments as JSON (model, backend, ...)")
    p.add_argument("--out", required=True, type=Path)
    a = p.parse_args(argv)
    _probe(json.loads(a.spec), a.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
