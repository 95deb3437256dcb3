"""The advisory file lock of the timing cache and the engine cache: `cellvit_trt.io.file_lock`."""

from cellvit_trt.io import file_lock

__all__ = ["file_lock"]
