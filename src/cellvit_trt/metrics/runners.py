"""Runners for `validate`: the candidate (file, backend name or runner object) and the FP32 reference."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from cellvit_trt.errors import InputError

BACKEND_NAMES = ("torch", "torch-cuda", "onnxruntime", "tensorrt")
CKPT = (".pth", ".pt", ".ckpt", ".bin")


def is_runner(x: Any) -> bool:
    return hasattr(x, "infer") or callable(x)


@contextlib.contextmanager
def active(runner: Any) -> Iterator[Any]:
    """Activate a backend for the block unless it is already active (then the caller owns it)."""
    if hasattr(runner, "activate") and not getattr(runner, "is_active", True):
        with runner:
            yield runner
    else:
        yield runner


def infer_maps(runner: Any, images: np.ndarray) -> dict[str, np.ndarray]:
    out = runner.infer(images) if hasattr(runner, "infer") else runner(images)
    for key in ("fg", "hv", "type_map", "tissue_logits"):
        if key not in out:
            raise InputError(f"validate: runner output {key!r} missing (got {sorted(out)})")
    return out


def open_candidate(
    candidate: Any,
    reference: str | Path | None,
    *,
    backend: str = "auto",
    batch: int = 8,
    tile_size: int | None = None,
    precision: str | None = None,
) -> tuple[Any, str]:
    """(runner, label) for a candidate spec: runner object, backend name, or model file."""
    if is_runner(candidate) and not isinstance(candidate, (str, Path)):
        return candidate, getattr(candidate, "name", type(candidate).__name__)
    from cellvit_trt.runtime.backends import open_backend

    spec = str(candidate)
    if spec in BACKEND_NAMES:
        if reference is None:
            raise InputError(
                f"--candidate {spec}: a backend name runs the reference checkpoint; give --reference"
            )
        return (
            open_backend(reference, backend=spec, batch=batch, tile_size=tile_size, precision=precision),
            f"{spec}:{Path(str(reference)).name}" + (f"@{precision}" if precision else ""),
        )
    return open_backend(spec, backend=backend, batch=batch, tile_size=tile_size, precision=precision), spec


def open_reference(
    reference: str | Path | Any, tile_size: int, batch: int, device: str = "auto"
) -> tuple[Any, str]:
    """The FP32 PyTorch reference (on the GPU when `device` is 'auto' and PyTorch sees one)."""
    if is_runner(reference) and not isinstance(reference, (str, Path)):
        return reference, getattr(reference, "name", type(reference).__name__)
    from cellvit_trt.runtime.backends import model_kind
    from cellvit_trt.runtime.backends.torch import TorchBackend

    kind, path = model_kind(reference)
    if kind != "checkpoint":
        raise InputError(
            f"--reference {reference}: the reference is the FP32 PyTorch model, so give its "
            f"checkpoint (.pth), not a {kind}"
        )
    if device == "auto":
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    ref = TorchBackend(path, device=device, precision="fp32", batch=batch, tile_size=tile_size)
    return ref, f"torch-fp32:{path.name}"


def _sha(meta: Any) -> str | None:
    raw = getattr(meta, "raw", None) or {}
    model = raw.get("model") if isinstance(raw.get("model"), dict) else {}
    for d in (raw, model):
        for key in ("checkpoint_sha256", "source_checkpoint_sha256", "sha256"):
            if isinstance(d.get(key), str) and d[key]:
                return d[key]
    return None


def checkpoint_mismatch(cand_meta: Any, ref_meta: Any) -> str | None:
    a, b = _sha(cand_meta), _sha(ref_meta)
    if a and b and a != b:
        return (
            f"the candidate was made from checkpoint sha256 {a[:12]}…, the reference is {b[:12]}…: "
            "they are different models, so agreement is not meaningful"
        )
    return None
