"""Errors of the engine stage. Both derive from the package's typed errors, so the CLI prints them plainly."""

from __future__ import annotations

from cellvit_trt.errors import CellViTTRTError, InputError


class EngineBuildError(CellViTTRTError, RuntimeError):
    """TensorRT could not parse the graph or build the engine; the message carries TensorRT's own errors."""


class EngineCacheError(InputError):
    """An engine that must not be used: missing, foreign, stale, truncated, tampered, or not signed by a
    trusted key.

    `reason` is one of `REASONS`, so callers can tell "rebuild" cases apart from "refuse" cases.
    """

    REASONS = (
        "missing",
        "no-sidecar",
        "bad-sidecar",
        "foreign",
        "stale",
        "truncated",
        "tampered",
        "unsigned",  # trusted keys are configured and the engine has no signature
        "bad-signature",  # a signature that does not verify, or by a key that is not trusted
    )

    def __init__(self, message: str, reason: str) -> None:
        if reason not in self.REASONS:
            raise ValueError(f"EngineCacheError: unknown reason {reason!r}")
        super().__init__(message)
        self.reason = reason
