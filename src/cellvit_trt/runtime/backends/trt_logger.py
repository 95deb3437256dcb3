"""Route TensorRT's logger to Python logging and keep the last errors for exception messages."""

from __future__ import annotations

import logging
from collections import deque

log = logging.getLogger("cellvit_trt.tensorrt")


def make_logger(trt):
    """A `trt.ILogger` subclass instance; TensorRT reports most failures only through it."""

    class _Logger(trt.ILogger):
        def __init__(self) -> None:
            trt.ILogger.__init__(self)
            self.errors: deque[str] = deque(maxlen=8)

        def log(self, severity, msg: str) -> None:  # noqa: D401 - TensorRT callback
            S = trt.ILogger.Severity
            if severity in (S.INTERNAL_ERROR, S.ERROR):
                self.errors.append(msg)
                log.error("%s", msg)
            elif severity == S.WARNING:
                log.warning("%s", msg)
            elif severity == S.INFO:
                log.info("%s", msg)
            else:
                log.debug("%s", msg)

    return _Logger()
