"""The one error type of the service: a gRPC status code name and a message that says what was expected."""

from __future__ import annotations

from cellvit_trt.errors import CellViTTRTError


class SlideError(CellViTTRTError):
    """Fails one slide (never the server): `code` is a grpc.StatusCode name, e.g. "INVALID_ARGUMENT"."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message
