"""The package's one TensorRT logger: routes messages to Python logging and keeps errors and warnings.

TensorRT reports most failures only through its logger (`build_serialized_network`, `deserialize_cuda_engine`
return None, `execute_async_v3` returns False), so the builder and the runtime backend quote what was logged
when they raise. Only the latest messages are kept, so a long run cannot grow the lists without bound.
"""

from __future__ import annotations

import logging
from types import ModuleType
from typing import Any

_LEVELS = {
    "INTERNAL_ERROR": logging.CRITICAL,
    "ERROR": logging.ERROR,
    "WARNING": logging.WARNING,
    "INFO": logging.INFO,
    "VERBOSE": logging.DEBUG,
}
_KEEP = 64
_OOM_HINTS = (
    "insufficient memory",
    "out of memory",
    "could not find any implementation",
    "cudaerrormemoryallocation",
)

log = logging.getLogger("cellvit_trt.tensorrt")


def make_logger(trt: ModuleType, verbose: bool = False) -> Any:
    """An instance of a `trt.ILogger` subclass; `.errors` holds error messages, `.warnings` warnings."""

    class _Logger(trt.ILogger):  # type: ignore[name-defined, misc]
        def __init__(self) -> None:
            trt.ILogger.__init__(self)
            self.errors: list[str] = []
            self.warnings: list[str] = []

        def log(self, severity: Any, msg: str) -> None:
            name = getattr(severity, "name", str(severity).rsplit(".", 1)[-1])
            level = _LEVELS.get(name, logging.INFO)
            if level >= logging.ERROR:
                _append(self.errors, msg)
            elif level == logging.WARNING:
                _append(self.warnings, msg)
            if level >= logging.INFO or verbose:
                log.log(level, "%s", msg)

        def looks_out_of_memory(self) -> bool:
            text = " ".join(self.errors + self.warnings).lower()
            return any(h in text for h in _OOM_HINTS)

    return _Logger()


def _append(messages: list[str], msg: str) -> None:
    messages.append(msg)
    if len(messages) > 2 * _KEEP:
        del messages[:-_KEEP]
