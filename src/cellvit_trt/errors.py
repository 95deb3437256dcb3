"""Typed errors. Every message names the file, the field and what was expected."""

from __future__ import annotations


class CellViTTRTError(Exception):
    """Base class of every error this package raises on purpose."""


class InputError(CellViTTRTError, ValueError):
    """Bad user input: a file, a field or a value that is not what was expected."""


class UsageError(InputError):
    """The command line itself is incomplete or contradictory (exit 2, like argparse's own errors)."""


class CheckpointError(InputError):
    """A file that is not a loadable CellViT checkpoint."""


class ConfigError(InputError):
    """An invalid configuration key or value."""


class DependencyError(CellViTTRTError, ImportError):
    """An optional dependency (PyTorch, ONNX Runtime, TensorRT, cuda-python, ...) is missing."""


class DeviceError(CellViTTRTError, RuntimeError):
    """No usable GPU, driver or CUDA runtime."""


class GateError(CellViTTRTError):
    """A parity or accuracy gate failed; the message carries the readable report."""


def require(module: str, extra: str, purpose: str):
    """Import an optional dependency or raise a DependencyError that says how to install it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:  # pragma: no cover - exercised only where the extra is missing
        raise DependencyError(
            f"{purpose} needs the Python package '{module}', which is not installed ({exc}). "
            f"Install the '{extra}' extra: pip install 'cellvit-trt[{extra}]' "
            f"(from a checkout: pip install '.[{extra}]')"
        ) from exc
