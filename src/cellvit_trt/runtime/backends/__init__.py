"""Backends behind one runner interface (see `base.py`), and `open_backend` to pick one.

    with open_backend("slide-model.engine") as be:        # TensorRT
    with open_backend("model.onnx", backend="onnxruntime", providers="auto") as be:
    with open_backend("checkpoint.pth") as be:            # auto: see below (exported once into the cache)
    with open_backend("demo") as be:                      # the shipped tiny demo checkpoint

Selection with `backend="auto"` (the default):
- an engine file → TensorRT (it needs a GPU: a clear DeviceError otherwise);
- an ONNX graph → TensorRT when a GPU and TensorRT are present (engine from the engine cache), else ONNX
Runtime;
- a checkpoint → the ONNX route above after exporting it once into the cache; on a GPU without TensorRT, the
  PyTorch CUDA backend (FP16 autocast) in the cuda-python streaming layer; without ONNX Runtime, PyTorch.
"""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path
from typing import Any, Literal

from cellvit_trt.errors import ConfigError, DependencyError, DeviceError, InputError
from cellvit_trt.runtime.backends.base import Backend, ModelMeta, check_images

log = logging.getLogger(__name__)

BackendName = Literal["auto", "tensorrt", "onnxruntime", "torch", "torch-cuda"]
BACKENDS = ("auto", "tensorrt", "onnxruntime", "torch", "torch-cuda")
ENGINE_SUFFIXES = (".engine", ".plan", ".trt")
ONNX_SUFFIXES = (".onnx",)
CHECKPOINT_SUFFIXES = (".pth", ".pt", ".ckpt", ".bin")


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def _gpu() -> bool:
    from cellvit_trt.runtime.cuda.device import gpu_available

    return gpu_available()


def model_kind(spec: str | Path) -> tuple[str, Path]:
    """('engine' | 'onnx' | 'checkpoint', path) for a file, or the demo checkpoint for the name 'demo'."""
    if str(spec) in ("demo", "tiny-demo"):
        return "checkpoint", demo_checkpoint()
    path = Path(spec)
    if not path.exists():
        raise InputError(
            f"model {spec}: no such file (expected an engine {ENGINE_SUFFIXES}, an ONNX graph, a "
            f"checkpoint {CHECKPOINT_SUFFIXES} or the name 'demo')"
        )
    suffix = path.suffix.lower()
    if suffix in ENGINE_SUFFIXES:
        return "engine", path
    if suffix in ONNX_SUFFIXES:
        return "onnx", path
    if suffix in CHECKPOINT_SUFFIXES:
        from cellvit_trt.models.fileformat import check_checkpoint_file

        return "checkpoint", check_checkpoint_file(path)  # garbage fails here, before any export starts
    raise InputError(
        f"model {path}: unknown file type {suffix!r}; expected an engine {ENGINE_SUFFIXES}, "
        f"an ONNX graph (.onnx) or a checkpoint {CHECKPOINT_SUFFIXES}"
    )


def demo_checkpoint() -> Path:
    try:
        from cellvit_trt.data import demo_checkpoint_path
    except ImportError as exc:
        raise DependencyError(
            f"the shipped demo model is not available in this installation ({exc})"
        ) from exc
    return Path(demo_checkpoint_path())


def choose_backend(kind: str, requested: str = "auto") -> str:
    if requested not in BACKENDS:
        raise InputError(f"backend: got {requested!r}, expected one of {', '.join(BACKENDS)}")
    if requested != "auto":
        if kind == "engine" and requested != "tensorrt":
            raise InputError(
                f"backend {requested!r} cannot run a TensorRT engine; give an ONNX graph or checkpoint"
            )
        if kind == "onnx" and requested in ("torch", "torch-cuda"):
            raise InputError(f"backend {requested!r} needs a checkpoint, not an ONNX graph")
        return requested
    if kind == "engine":
        return "tensorrt"
    gpu = _gpu()
    if gpu and _installed("tensorrt"):
        return "tensorrt"
    if kind == "checkpoint" and gpu and _installed("torch"):
        return "torch-cuda"
    if _installed("onnxruntime") and (kind == "onnx" or (_installed("onnx") and _installed("torch"))):
        return "onnxruntime"
    if kind == "checkpoint":
        return "torch"
    raise DependencyError(
        "no backend can run an ONNX graph here: install onnxruntime (pip install "
        "'cellvit-trt[ort]') or TensorRT with a GPU"
    )


def open_backend(
    spec: str | Path,
    backend: str = "auto",
    *,
    batch: int = 8,
    tile_size: int | None = None,
    precision: str | None = None,
    providers: Any = None,
    threads: int = 0,
    device: int = 0,
    cuda_graphs: bool = False,
    slots: int = 2,
    tokens: bool = False,
    cache_dir: str | Path | None = None,
    trusted_keys: str | Path | None = None,
) -> Backend:
    """A backend for a model file (engine, ONNX, checkpoint) or 'demo' (not yet activated: use `with`).

    `trusted_keys`: a folder of Ed25519 public keys; the model must then be an engine signed by one of them
    (checked before TensorRT deserialises it)."""
    kind, path = model_kind(spec)
    if trusted_keys is not None and kind != "engine":
        raise ConfigError(
            f"trusted_keys: only TensorRT engines are signed, and {spec} is a {kind}; give a signed engine "
            "(cellvit-trt build --sign) or leave trusted_keys unset"
        )
    name = choose_backend(kind, backend)
    log.info("model %s (%s) → backend %s", path, kind, name)
    if name in ("torch", "torch-cuda"):
        if kind != "checkpoint":
            raise InputError(f"backend {name!r} needs a checkpoint, got {path}")
        if name == "torch":
            from cellvit_trt.runtime.backends.torch import TorchBackend

            return TorchBackend(
                path,
                precision=precision or "fp32",
                batch=batch,
                tile_size=tile_size or 1024,
                tokens=tokens,
                threads=threads,
            )
        from cellvit_trt.runtime.backends.torch_cuda import TorchCudaBackend

        return TorchCudaBackend(
            path,
            device=device,
            precision=precision or "fp16",
            batch=batch,
            tile_size=tile_size or 1024,
            tokens=tokens,
            slots=slots,
        )
    if kind == "checkpoint":
        onnx_precision = precision or ("fp16" if name == "tensorrt" else "fp32")
        path = export_cached(path, tile_size or 1024, onnx_precision, tokens=tokens, cache_dir=cache_dir)
        kind = "onnx"
    if name == "onnxruntime":
        from cellvit_trt.runtime.backends.onnxrt import OnnxRuntimeBackend

        if providers is None and backend == "auto" and _gpu():
            providers = "auto"  # a GPU without TensorRT: ORT's CUDA/TensorRT providers where installed
        return OnnxRuntimeBackend(path, providers=providers, batch=batch, threads=threads, device=device)
    if kind == "onnx":
        path = engine_cached(path, batch=batch, device=device)
    from cellvit_trt.runtime.backends.trt import TensorRTBackend

    return TensorRTBackend(
        path, slots=slots, cuda_graphs=cuda_graphs, device=device, trusted_keys=trusted_keys
    )


def run_backend_spec(settings: Any) -> dict[str, Any]:
    """The `open_backend` arguments (model included) of a `RunSettings`: what `open_run_backend` opens and
    what the memory probe opens again in its own process (runtime/footprint.py)."""
    from cellvit_trt.runtime.budget import GPU_PREFERRED_BATCH

    return dict(
        model=settings.model,
        backend=settings.backend,
        batch=settings.batch or GPU_PREFERRED_BATCH,  # the most a backend/engine is built for
        tile_size=settings.tile_size,
        precision=settings.precision,
        providers=settings.providers,
        threads=settings.threads,
        device=settings.device,
        cuda_graphs=settings.cuda_graphs,
        slots=settings.in_flight,
        tokens="embeddings" in settings.outputs,
        cache_dir=settings.cache_dir,
        trusted_keys=getattr(settings, "trusted_keys", None),  # `serve` settings have none
    )


def open_run_backend(settings: Any) -> Backend:
    """The backend `cellvit-trt run` opens for a `RunSettings` (not yet active); each Ray worker and `serve`
    (settings with the same fields) open theirs the same way."""
    spec = run_backend_spec(settings)
    return open_backend(spec.pop("model"), **spec)


def check_outputs(backend: Backend, outputs: Any, model: Any) -> None:
    """Refuse outputs the active backend's model cannot give (embeddings need a `tokens` output)."""
    from cellvit_trt.errors import ConfigError

    if "embeddings" in outputs and "tokens" not in backend.output_names:
        raise ConfigError(
            f"outputs: 'embeddings' needs a model with a 'tokens' output; {model} "
            f"has {list(backend.output_names)} (export with --tokens)"
        )


def export_cached(
    checkpoint: Path,
    tile_size: int,
    precision: str,
    *,
    tokens: bool = False,
    cache_dir: str | Path | None = None,
    gate: bool = True,
) -> Path:
    """Export a checkpoint to a deployment ONNX graph once; later runs reuse it (keyed by checkpoint hash).

    `gate`: run the export stage's parity gate against PyTorch (on by default; a graph that fails it is not
    cached)."""
    from cellvit_trt.io import sha256_file

    try:
        from cellvit_trt.export import ExportSettings, export
    except ImportError as exc:
        raise DependencyError(
            f"exporting {checkpoint} to ONNX needs the export stage (pip install "
            f"'cellvit-trt[export]'): {exc}"
        ) from exc
    root = Path(cache_dir) if cache_dir else _cache_root() / "onnx"
    digest = sha256_file(checkpoint)[:16]
    out = root / f"{checkpoint.stem}-{digest}-{tile_size}-{precision}{'-tokens' if tokens else ''}.onnx"
    if out.is_file():
        log.info("reusing exported graph %s", out)
        return out
    from cellvit_trt.io import file_lock

    # Workers sharing a cache (several Ray actors on a node, nodes on shared storage) export it once: the
    # others wait for the lock and then find the graph.
    with file_lock(out):
        if out.is_file():
            log.info("reusing exported graph %s (exported by another process meanwhile)", out)
            return out
        log.warning("exporting %s to %s (once; later runs reuse it)", checkpoint, out)
        export(
            ExportSettings(
                checkpoint=checkpoint,
                output=out,
                precision=precision,
                tile_size=tile_size,
                tokens=tokens,
                gate=gate,
            )
        )
    return out


def engine_cached(onnx_path: Path, batch: int, device: int = 0) -> Path:
    from cellvit_trt.engine import BuildSettings, ensure_engine

    artifact = ensure_engine(onnx_path, BuildSettings(max_batch=batch, device=device))
    return artifact.path


def _cache_root() -> Path:
    from cellvit_trt.cache_root import default_cache_root

    return default_cache_root()


__all__ = [
    "BACKENDS",
    "Backend",
    "DeviceError",
    "ModelMeta",
    "check_images",
    "check_outputs",
    "choose_backend",
    "open_backend",
    "open_run_backend",
    "run_backend_spec",
    "model_kind",
]
