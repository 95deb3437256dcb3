"""Buffer objects that each own exactly one allocation (NVIDIA common_runtime.py style).

- `PinnedBuffer`: page-locked host memory, viewed as a numpy array; optionally *mapped* into the device
address
  space (`device_ptr`), which on an integrated GPU (Jetson) removes the copies altogether.
- `DeviceBuffer`: device memory.
Both are allocated once (at backend activation) and freed by `close()`; freeing twice is a no-op and a failed
free is logged, never swallowed silently.
"""

from __future__ import annotations

import ctypes
import logging
from collections.abc import Sequence

import numpy as np

from cellvit_trt.runtime.cuda import api

log = logging.getLogger(__name__)


def _nbytes(shape: Sequence[int], dtype: np.dtype) -> int:
    return int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize


class PinnedBuffer:
    """Page-locked host array of `shape`/`dtype`. `mapped=True` also gives a device pointer (zero-copy)."""

    def __init__(self, shape: Sequence[int], dtype: np.dtype | type, mapped: bool = False):
        self.shape, self.dtype = tuple(int(s) for s in shape), np.dtype(dtype)
        self.nbytes = max(_nbytes(self.shape, self.dtype), 1)
        rt = api.cudart()
        if mapped:
            self.ptr = int(api.call("cudaHostAlloc", self.nbytes, rt.cudaHostAllocMapped))
            self.device_ptr = int(api.call("cudaHostGetDevicePointer", self.ptr, 0))
        else:
            self.ptr = int(api.call("cudaMallocHost", self.nbytes))
            self.device_ptr = 0
        raw = (ctypes.c_byte * self.nbytes).from_address(self.ptr)
        self.array = (
            np.frombuffer(raw, dtype=np.uint8, count=_nbytes(self.shape, self.dtype))
            .view(self.dtype)
            .reshape(self.shape)
        )

    def close(self) -> None:
        if self.ptr:
            ptr, self.ptr, self.device_ptr = self.ptr, 0, 0
            self.array = None  # type: ignore[assignment]  # no view may outlive the allocation
            try:
                api.call("cudaFreeHost", ptr)
            except api.CudaError as exc:
                log.warning("freeing pinned host buffer failed: %s", exc)


class DeviceBuffer:
    """`nbytes` of device memory."""

    def __init__(self, nbytes: int):
        self.nbytes = max(int(nbytes), 1)
        self.ptr = int(api.call("cudaMalloc", self.nbytes))

    def close(self) -> None:
        if self.ptr:
            ptr, self.ptr = self.ptr, 0
            try:
                api.call("cudaFree", ptr)
            except api.CudaError as exc:
                log.warning("freeing device buffer failed: %s", exc)


def copy_h2d(dst_ptr: int, src: PinnedBuffer, nbytes: int, stream: int) -> None:
    rt = api.cudart()
    api.call("cudaMemcpyAsync", dst_ptr, src.ptr, nbytes, rt.cudaMemcpyKind.cudaMemcpyHostToDevice, stream)


def copy_d2h(dst: PinnedBuffer, src_ptr: int, nbytes: int, stream: int) -> None:
    rt = api.cudart()
    api.call("cudaMemcpyAsync", dst.ptr, src_ptr, nbytes, rt.cudaMemcpyKind.cudaMemcpyDeviceToHost, stream)
