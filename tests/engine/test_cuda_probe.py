"""Missing pieces give DependencyError/DeviceError that say what is missing and how to install it.

The first tests use the real cuda-python on this machine; `test_probe_*_contract` tests use a stand-in of the
cuda.bindings.runtime module to reach the paths a machine cannot show at will (no GPU behind a driver, a GPU).
"""

from __future__ import annotations

import sys
from types import SimpleNamespace

import pytest
from tests.simulator.cuda import CudaSim

from cellvit_trt.engine import cuda_probe
from cellvit_trt.engine.cuda_probe import CudaError, probe_device
from cellvit_trt.engine.trt_api import import_tensorrt, require_gpu_stack
from cellvit_trt.errors import DependencyError, DeviceError


def test_real_probe_reports_a_device_or_says_what_is_missing():
    try:
        dev = probe_device(0)
    except DeviceError as exc:
        msg = str(exc)
        assert ("driver" in msg or "sees no GPU" in msg) and ("nvidia-smi" in msg or "install" in msg)
    else:
        assert dev.name and dev.sm_count > 0 and dev.total_memory >= dev.free_memory > 0


def test_missing_cuda_python_and_tensorrt(monkeypatch):
    for name in ("cuda.bindings.runtime", "cuda.cudart", "tensorrt"):
        monkeypatch.setitem(sys.modules, name, None)  # import raises ImportError
    with pytest.raises(DependencyError, match="pip install 'cellvit-trt\\[trt\\]'"):
        cuda_probe.import_cudart()
    with pytest.raises(DependencyError, match="pip install tensorrt .*python3-libnvinfer"):
        import_tensorrt()
    with pytest.raises(DependencyError) as exc:
        require_gpu_stack(0)
    assert "cuda-python" in str(exc.value) and "TensorRT is not importable" in str(exc.value)


def fake_cudart(count_err=0, mem_err=0):
    """The CUDA simulator (tests/simulator) as an AGX Orin: JetPack 6's CUDA 12.6, 16 SMs, integrated."""
    sim = CudaSim(
        name="NVIDIA Jetson AGX Orin", sm=(8, 7), sm_count=16, integrated=True, driver=12060, runtime=12060
    )
    sim.faults["api_errors"] = {
        k: v for k, v in (("cudaGetDeviceCount", count_err), ("cudaMemGetInfo", mem_err)) if v
    }
    if count_err == 35:
        sim.devices = 0
    return sim


def test_probe_no_driver_contract():
    with pytest.raises(DeviceError, match="no usable NVIDIA driver.*cudaErrorInsufficientDriver.*--gpus all"):
        probe_device(0, fake_cudart(count_err=35))


def test_probe_no_gpu_contract():
    with pytest.raises(DeviceError, match="sees no GPU; check nvidia-smi and CUDA_VISIBLE_DEVICES"):
        probe_device(0, fake_cudart(count_err=100))
    with pytest.raises(DeviceError, match="GPU 1 was asked for but only 1 GPU"):
        probe_device(1, fake_cudart())


def test_probe_device_contract():
    dev = probe_device(0, fake_cudart())
    assert (dev.name, dev.sm, dev.sm_count, dev.integrated) == ("NVIDIA Jetson AGX Orin", "8.7", 16, True)
    assert (dev.free_memory, dev.driver_version) == (12 << 30, 12060)
    assert "CUDA driver 12.6" in dev.describe()
    with pytest.raises(CudaError, match="cudaMemGetInfo\\(\\) failed: cudaErrorMemoryAllocation"):
        probe_device(0, fake_cudart(mem_err=2))


def test_require_gpu_stack_refuses_before_any_tensorrt_object_contract():
    created = []
    trt = SimpleNamespace(
        Builder=lambda *a: created.append("Builder"), Runtime=lambda *a: created.append("Runtime")
    )
    with pytest.raises(DeviceError, match="no usable NVIDIA driver"):
        require_gpu_stack(0, trt=trt, cudart=fake_cudart(count_err=35))
    assert created == []
    got_trt, dev = require_gpu_stack(0, trt=trt, cudart=fake_cudart())
    assert got_trt is trt and dev.sm == "8.7" and created == []
