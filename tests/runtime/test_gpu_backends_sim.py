"""The TensorRT and PyTorch-CUDA backends on the CUDA / TensorRT semantics simulator (tests/simulator).

Every test runs under every schedule of the simulator (`rig.schedule`): queued GPU work runs as late as
possible, as early as possible, copies before kernels and the reverse, or at random. A missing stream wait,
event record or synchronisation therefore gives wrong or stale outputs, an unwritten-memory read or a
use-after-free, not just a different call list. `tests/runtime/test_sync_mutants.py` deletes each of them
from the backends in turn and runs these tests against every mutant.

Nothing here has run on a real GPU; the same backends run for real in test_backends_gpu.py (markers gpu,
tensorrt) where a GPU is present.
"""

from __future__ import annotations

import logging

import numpy as np
import pytest
from tests.runtime.test_backends_gpu import _two_in_flight
from tests.simulator.cuda import SCHEDULES, CudaSim, Err, Hazard
from tests.simulator.harness import MAX_BATCH, TILE, TISSUE, Rig
from tests.simulator.tensorrt import reference_outputs

from cellvit_trt.engine.errors import EngineCacheError
from cellvit_trt.engine.settings import BuildSettings
from cellvit_trt.errors import DeviceError, InputError


@pytest.fixture(params=SCHEDULES)
def rig(request, tmp_path):
    r = Rig(request.param, tmp_path)
    yield r
    r.close()


def tiles(n, seed):
    return np.random.default_rng(seed).integers(0, 256, (n, TILE, TILE, 3), dtype=np.uint8)


def check(out, images):
    ref = reference_outputs(images, TISSUE)
    assert set(out) == set(ref)
    for k in ref:
        assert out[k].dtype == ref[k].dtype and out[k].shape == ref[k].shape, k
        np.testing.assert_array_equal(out[k], ref[k], err_msg=k)


# ---- TensorRT -------------------------------------------------------------------------------------------
def test_trt_outputs_timings_and_timeline(rig):
    gpu = rig.open()
    batches = [tiles(MAX_BATCH, s) for s in range(5)] + [tiles(3, 9)]
    with gpu.trt_backend(gpu.engine()) as be:
        assert (be.max_batch, be.tile_size, be.max_in_flight) == (MAX_BATCH, TILE, 2)
        assert be.meta.class_names[1] == "A"
        be.timeline = []
        outs = _two_in_flight(be, batches)
        assert set(be.last_timings) == {"h2d", "compute", "d2h"}
        assert all(v > 0 for v in be.last_timings.values())
        assert len(be.timeline) == len(batches) and all(t["d2h_done"] > t["h2d_start"] for t in be.timeline)
    for b, out in zip(batches, outs, strict=True):
        check(out, b)
    assert gpu.cuda.pageable_copies == 0, "the hot loop copies only from/to pinned memory"
    assert gpu.cuda.pending_ops() == 0


def test_trt_in_flight_limit_and_collection_order(rig):
    gpu = rig.open()
    with gpu.trt_backend(gpu.engine()) as be:
        h1, h2 = be.submit(tiles(2, 1)), be.submit(tiles(2, 2))
        with pytest.raises(RuntimeError, match="in flight"):
            be.submit(tiles(2, 3))
        with pytest.raises(RuntimeError, match="submission order"):
            be.result(h2)
        check(be.result(h1), tiles(2, 1))
        check(be.result(h2), tiles(2, 2))


def test_trt_binds_shapes_and_addresses_only_on_change(rig):
    gpu = rig.open()
    with gpu.trt_backend(gpu.engine()) as be:
        for seed in range(6):
            be.infer(tiles(MAX_BATCH, seed))
        be.infer(tiles(2, 9))  # slot 0: shape change
        be.infer(tiles(2, 10))  # slot 1: shape change
        be.infer(tiles(2, 11))  # slot 0: nothing changes
        contexts = [b.context for b in be._bindings]
    assert len(contexts) == 2 and contexts[0] is not contexts[1], "one context per slot"
    for ctx in contexts:
        shapes = [c[2][0] for c in ctx.calls if c[0] == "set_input_shape"]
        assert shapes == [MAX_BATCH, 2], f"shape re-bound only on change: {shapes}"
        assert [c[0] for c in ctx.calls].count("set_tensor_address") == 5, "addresses bound once per slot"
        assert [c for c in ctx.calls if c[0] == "set_device_memory"] == [("set_device_memory", 4096)]
    assert [c[0] for c in contexts[0].calls].count("execute_async_v3") == 5


def test_cuda_layer_frees_once_and_names_errors(rig):
    from cellvit_trt.runtime.cuda import api
    from cellvit_trt.runtime.cuda.memory import DeviceBuffer, PinnedBuffer

    gpu = rig.open()
    buf = PinnedBuffer((2, 3, 4), np.float16)
    assert buf.array.shape == (2, 3, 4) and buf.array.dtype == np.float16
    buf.array[:] = 1.5
    buf.close()
    buf.close()
    assert buf.array is None and gpu.cuda.calls.count("cudaFreeHost") == 1
    gpu.cuda.cudaMalloc = lambda n: (gpu.cuda.cudaError_t.cudaErrorMemoryAllocation, 0)
    with pytest.raises(api.CudaError, match=r"cudaMalloc\(1048576\) failed: cudaErrorMemoryAllocation") as e:
        DeviceBuffer(1 << 20)
    assert e.value.name == "cudaErrorMemoryAllocation" and e.value.code == 2
    assert isinstance(e.value, DeviceError)


def test_trt_cuda_graphs_with_two_slots(rig):
    """Issue 12 item 2: with graphs, TensorRT's input-consumed event would be recorded inside the capture, and
    the next cross-stream wait on it fails (cudaErrorCapturedEvent)."""
    gpu = rig.open()
    batches = [tiles(MAX_BATCH, s) for s in range(6)]
    with gpu.trt_backend(gpu.engine(), cuda_graphs=True) as be:
        outs = _two_in_flight(be, batches)
        assert be.cuda_graphs
    for b, out in zip(batches, outs, strict=True):
        check(out, b)
    assert gpu.cuda.calls.count("cudaStreamBeginCapture") == 2  # one graph per slot, replayed after
    assert gpu.cuda.calls.count("cudaGraphLaunch") == 6


def test_trt_cuda_graphs_across_shape_changes(rig):
    """Issue 12 items 2 and 3: graphs with two slots, and a 4 -> 2 -> 4 batch sequence on each slot."""
    gpu = rig.open()
    sizes = [4, 4, 2, 2, 4, 4, 4, 4, 3, 4]
    batches = [tiles(n, i) for i, n in enumerate(sizes)]
    with gpu.trt_backend(gpu.engine(), cuda_graphs=True) as be:
        outs = _two_in_flight(be, batches)
        assert be.cuda_graphs, "capture failed and the backend fell back to eager execution"
    for b, out in zip(batches, outs, strict=True):
        check(out, b)
    assert gpu.cuda.calls.count("cudaGraphLaunch") == len(batches)
    assert gpu.cuda.calls.count("cudaStreamBeginCapture") == 7  # per slot: first use and each shape change


def test_trt_failed_capture_keeps_the_enqueue_error_and_clears_cuda_error(rig, caplog):
    """Issue 12 item 4: EndCapture must not mask the enqueue's error; no stale CUDA error may remain."""
    gpu = rig.open()
    gpu.cuda.faults["capture_fails"] = True
    batches = [tiles(MAX_BATCH, s) for s in range(4)]
    with caplog.at_level(logging.WARNING), gpu.trt_backend(gpu.engine(), cuda_graphs=True) as be:
        outs = _two_in_flight(be, batches)
        assert not be.cuda_graphs
    for b, out in zip(batches, outs, strict=True):
        check(out, b)
    warning = " ".join(r.getMessage() for r in caplog.records if "graph capture failed" in r.getMessage())
    assert "not permitted under stream capture" in warning, warning
    assert gpu.cuda.last_error == 0


def test_trt_refused_tensor_address_is_an_error_naming_the_tensor(rig):
    gpu = rig.open()
    gpu.cuda.faults["refuse_address"] = {"hv"}
    with gpu.trt_backend(gpu.engine()) as be, pytest.raises(DeviceError, match="tensor 'hv'"):
        be.infer(tiles(1, 0))


def test_trt_zero_copy_on_an_integrated_gpu(rig):
    gpu = rig.open(integrated=True)
    batches = [tiles(3, 5), tiles(MAX_BATCH, 6), tiles(1, 7)]
    with gpu.trt_backend(gpu.engine()) as be:
        assert be.zero_copy
        outs = _two_in_flight(be, batches)
        assert set(be.last_timings) == {"compute"}
    for b, out in zip(batches, outs, strict=True):
        check(out, b)
    assert "cudaMemcpyAsync" not in gpu.cuda.calls
    assert gpu.cuda.calls.count("cudaMalloc") == 1, "only the shared scratch lives in device memory"


def test_trt_deactivate_with_batches_in_flight_frees_safely(rig):
    gpu = rig.open()
    with gpu.trt_backend(gpu.engine(), cuda_graphs=True) as be:
        check(be.infer(tiles(MAX_BATCH, 1)), tiles(MAX_BATCH, 1))
        be.submit(tiles(MAX_BATCH, 2))
        be.submit(tiles(2, 3))  # never collected: deactivate must wait for them before freeing
    assert be.slots == [] and gpu.cuda.pending_ops() == 0
    calls = gpu.cuda.calls
    assert calls.count("cudaMallocHost") == calls.count("cudaFreeHost") > 0
    assert calls.count("cudaMalloc") == calls.count("cudaFree") > 0
    assert calls.count("cudaEventCreateWithFlags") == calls.count("cudaEventDestroy")
    assert calls.count("cudaStreamCreateWithFlags") == calls.count("cudaStreamDestroy") == 3


def test_trt_version_compatible_engine_loads_with_host_code_allowed(rig):
    """Issue 12 item 1: `run -m x.engine` on a `build --version-compatible` engine."""
    gpu = rig.open()
    engine = gpu.engine(settings=BuildSettings(max_batch=MAX_BATCH, version_compatible=True))
    with gpu.trt_backend(engine) as be:
        check(be.infer(tiles(2, 4)), tiles(2, 4))
    assert ("deserialize_cuda_engine", True) in gpu.trt.calls


def test_trt_engine_for_another_tensorrt_is_refused_before_deserialisation(rig):
    gpu = rig.open()
    env = gpu.environment()
    import dataclasses

    engine = gpu.engine(env=dataclasses.replace(env, tensorrt="10.3.0"))
    with pytest.raises(EngineCacheError, match="foreign: tensorrt: engine '10.3.0'"):
        gpu.trt_backend(engine).activate()
    assert not [c for c in gpu.trt.calls if c[0] == "deserialize_cuda_engine"]


def test_trt_trusted_keys_refuse_unsigned_engines_before_deserialisation(rig):
    """Issue 12 item 6 at run time: `run --trusted-keys DIR` refuses an unsigned engine before TensorRT."""
    from tests.engine.signing_keys import make_key

    from cellvit_trt.engine.signing import sign_engine

    gpu = rig.open()
    engine = gpu.engine()
    private, public = make_key(rig.tmp / "keys", "builder")
    trusted = rig.tmp / "trusted"
    trusted.mkdir()
    (trusted / "builder.pub").write_bytes(public)
    with pytest.raises(EngineCacheError, match="is not signed") as exc:
        gpu.trt_backend(engine, trusted_keys=trusted).activate()
    assert exc.value.reason == "unsigned"
    assert not [c for c in gpu.trt.calls if c[0] in ("Runtime", "deserialize_cuda_engine")]
    sign_engine(engine, private)
    with gpu.trt_backend(engine, trusted_keys=trusted) as be:
        check(be.infer(tiles(2, 1)), tiles(2, 1))


def test_open_backend_takes_trusted_keys_for_engines_only(rig):
    from cellvit_trt.errors import ConfigError
    from cellvit_trt.runtime.backends import open_backend

    gpu = rig.open()
    onnx = rig.tmp / "m.onnx"
    onnx.write_bytes(b"not read")
    with pytest.raises(ConfigError, match="only TensorRT engines are signed"):
        open_backend(onnx, trusted_keys=rig.tmp)
    be = open_backend(gpu.engine(), trusted_keys=rig.tmp)
    assert be.kind == "tensorrt" and be.trusted_keys == rig.tmp


def test_trt_static_batch_engine_pads_partial_batches(rig):
    gpu = rig.open()
    with gpu.trt_backend(gpu.engine(static_batch=MAX_BATCH)) as be:
        assert be.max_batch == MAX_BATCH
        batch = tiles(3, 8)
        check(be.infer(batch), batch)
        assert (be.slots[0].host_in.array[3] == 255).all(), "the padding tile is white, like slide padding"


def test_trt_without_user_managed_memory_one_context_serves_every_slot(rig):
    gpu = rig.open()
    del gpu.trt.ExecutionContextAllocationStrategy  # TensorRT without USER_MANAGED contexts
    batches = [tiles(MAX_BATCH, s) for s in range(4)] + [tiles(2, 5)]
    with gpu.trt_backend(gpu.engine(), cuda_graphs=True) as be:
        outs = _two_in_flight(be, batches)
    for b, out in zip(batches, outs, strict=True):
        check(out, b)
    assert [c for c in gpu.trt.calls if c[0] == "create_execution_context"] == [
        ("create_execution_context", "STATIC")
    ]
    assert "cudaStreamBeginCapture" not in gpu.cuda.calls, "no graphs when contexts switch addresses"


def test_trt_execute_failure_is_a_device_error_with_tensorrt_message(rig):
    gpu = rig.open()
    gpu.cuda.faults["execute_fails"] = True
    with gpu.trt_backend(gpu.engine()) as be, pytest.raises(DeviceError, match="kernel launch failed"):
        be.infer(tiles(1, 0))


def test_trt_no_gpu_means_device_error_before_any_tensorrt_object(rig):
    gpu = rig.open(devices=0)
    with pytest.raises(DeviceError, match="driver"):
        gpu.trt_backend(rig.tmp / "none.engine").activate()
    assert ("Runtime",) not in gpu.trt.calls


def test_trt_bad_input_is_named(rig):
    gpu = rig.open()
    with gpu.trt_backend(gpu.engine()) as be, pytest.raises(InputError, match=r"tensor 'image': got float32"):
        be.infer(np.zeros((1, TILE, TILE, 3), np.float32))


def test_trt_pipeline_keeps_two_batches_in_flight(rig):
    from cellvit_trt.runtime.pipeline import Pipeline

    gpu = rig.open()
    images = tiles(11, 42)
    got = {}
    with gpu.trt_backend(gpu.engine()) as be:
        stats = Pipeline(
            be,
            read=lambda i: images[i],
            process=lambda i, m: m,
            sink=lambda i, m: got.__setitem__(i, m),
            batch=MAX_BATCH,
            workers=2,
        ).run(range(11))
    assert stats.tiles == 11 and sorted(got) == list(range(11))
    ref = reference_outputs(images, TISSUE)
    for i, m in got.items():
        for k in ref:
            np.testing.assert_array_equal(m[k], ref[k][i], err_msg=f"tile {i} {k}")
    assert set(stats.device_s) == {"h2d", "compute", "d2h"}


# ---- PyTorch-CUDA ---------------------------------------------------------------------------------------
def test_torch_cuda_outputs_timings_and_timeline(rig):
    gpu = rig.open()
    batches = [tiles(MAX_BATCH, s) for s in range(5)] + [tiles(2, 9)]
    with gpu.torch_cuda_backend() as be:
        assert be.kind == "torch-cuda" and be.max_in_flight == 2
        be.timeline = []
        outs = _two_in_flight(be, batches)
        assert set(be.last_timings) == {"h2d", "compute", "d2h"} and len(be.timeline) == len(batches)
    assert be.slots == []
    for b, out in zip(batches, outs, strict=True):
        check(out, b)


def test_torch_cuda_deactivate_with_batches_in_flight_frees_safely(rig):
    gpu = rig.open()
    with gpu.torch_cuda_backend() as be:
        be.submit(tiles(MAX_BATCH, 1))
        be.submit(tiles(3, 2))
    assert gpu.cuda.pending_ops() == 0
    calls = gpu.cuda.calls
    assert calls.count("cudaMallocHost") == calls.count("cudaFreeHost") > 0
    assert calls.count("cudaStreamCreateWithFlags") == calls.count("cudaStreamDestroy") == 3


@pytest.mark.parametrize("schedule", ["lazy", "copies-first", "eager"])
def test_simulator_catches_a_missing_wait(schedule):
    """The simulator itself: a copy stream that does not wait for the kernel reads unwritten memory, unless
    the schedule happens to run the kernel first (as a real GPU often would: why the schedules exist)."""
    sim = CudaSim(schedule)
    _, a = sim.cudaStreamCreateWithFlags(1)
    _, b = sim.cudaStreamCreateWithFlags(1)
    _, dev = sim.cudaMalloc(16)
    _, host = sim.cudaMallocHost(16)

    def bug():
        sim.launch(
            a,
            "kernel",
            lambda: sim.write_device(dev, np.arange(16, dtype=np.uint8), "k"),
            sim.uses((dev, 16)),
        )
        sim.cudaMemcpyAsync(host, dev, 16, 2, b)  # no cudaStreamWaitEvent(b, <event after the kernel>)
        sim.cudaStreamSynchronize(b)

    if schedule == "eager":
        bug()  # a friendly order hides the bug...
    else:
        with pytest.raises(Hazard, match="never written"):  # ...the others expose it
            bug()


def test_simulator_capture_rules():
    sim = CudaSim("lazy")
    _, s = sim.cudaStreamCreateWithFlags(1)
    _, other = sim.cudaStreamCreateWithFlags(1)
    _, e = sim.cudaEventCreateWithFlags(2)
    assert sim.cudaStreamBeginCapture(s, 1)[0] == 0
    assert sim.cudaEventRecord(e, s)[0] == 0
    assert sim.cudaStreamWaitEvent(other, e, 0)[0] == Err.cudaErrorCapturedEvent
    assert sim.cudaEventQuery(e)[0] == Err.cudaErrorCapturedEvent
    assert sim.cudaMalloc(16)[0] == Err.cudaErrorStreamCaptureUnsupported  # invalidates the capture
    assert sim.cudaStreamEndCapture(s) == (Err.cudaErrorStreamCaptureInvalidated, None)
    assert sim.cudaGetLastError() == (Err.cudaErrorStreamCaptureInvalidated,)
    assert sim.cudaGetLastError() == (Err.cudaSuccess,)
    _, t = sim.cudaEventCreateWithFlags(2)  # timing disabled
    assert sim.cudaEventRecord(t, other)[0] == 0
    assert sim.cudaEventElapsedTime(t, t)[0] == Err.cudaErrorInvalidResourceHandle


def test_run_cli_trusted_keys_refuses_an_unsigned_engine(rig, capsys):
    import cv2
    from tests.engine.signing_keys import make_key

    from cellvit_trt import cli

    gpu = rig.open()
    image = rig.tmp / "tile.png"
    cv2.imwrite(str(image), np.full((TILE, TILE, 3), 200, np.uint8))
    trusted = rig.tmp / "trusted"
    trusted.mkdir()
    (trusted / "builder.pub").write_bytes(make_key(rig.tmp / "keys", "builder")[1])
    argv = ["run", str(image), "-m", str(gpu.engine()), "-o", str(rig.tmp / "out")]
    argv += ["--trusted-keys", str(trusted)]
    assert cli.main(argv) == 1
    assert "is not signed" in capsys.readouterr().err
    assert not [c for c in gpu.trt.calls if c[0] == "deserialize_cuda_engine"]
    demo = ["run", str(image), "-o", str(rig.tmp / "out"), "--trusted-keys", str(trusted)]
    assert cli.main(demo) == 1
    assert "only TensorRT engines are signed" in capsys.readouterr().err
