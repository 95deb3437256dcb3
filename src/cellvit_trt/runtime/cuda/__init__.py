"""cuda-python helpers for the streaming runtime: error funnel, device probe, buffers, streams, events,
graphs, and the slot ring both GPU backends share.

Importing this package does not import cuda-python; the first `api.cudart()` call does.
"""

from cellvit_trt.runtime.cuda.api import CudaError, call, cudart, set_cudart
from cellvit_trt.runtime.cuda.device import DeviceInfo, gpu_available, probe_device

__all__ = [
    "CudaError",
    "DeviceInfo",
    "call",
    "cudart",
    "gpu_available",
    "probe_device",
    "set_cudart",
]
