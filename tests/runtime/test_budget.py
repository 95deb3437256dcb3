"""The memory budget: available memory (MemAvailable and cgroup v1/v2 files), the batch choice, the failure
before a run, the footprint probe's arithmetic, device memory. Fast: no model runs here (the end-to-end memory
figures are in test_memory_slides.py).

GPU paths cannot run on this CPU-only machine; where a test needs what the CUDA probe returns, it builds a
`CudaDevice` by hand with stated figures (marked FAKE PROBE below): the arithmetic is tested, not CUDA.
"""

from __future__ import annotations

import pytest

from cellvit_trt.engine.cuda_probe import CudaDevice
from cellvit_trt.runtime.budget import (
    BudgetError,
    DeviceBudget,
    Pipeline,
    choose_batch,
    host_estimate,
    parse_size,
)
from cellvit_trt.runtime.footprint import Footprint, FootprintError, _result
from cellvit_trt.runtime.memory import Available, DevicePeak, available_host

GiB, MiB = 2**30, 2**20
PIPE = Pipeline(workers=2, tiles_queued=4)


def fp(per_tile=0.5 * GiB, fixed=0.3 * GiB, post=40 * MiB, tile=9 * MiB, dev_fixed=None, dev_tile=None):
    return Footprint(
        host_fixed=int(fixed),
        host_per_tile=int(per_tile),
        post_per_worker=int(post),
        tile_bytes=int(tile),
        tile_size=1024,
        backend="onnxruntime",
        device_fixed=None if dev_fixed is None else int(dev_fixed),
        device_per_tile=None if dev_tile is None else int(dev_tile),
    )


def test_parse_size_units_and_errors():
    assert parse_size("8G") == parse_size("8GB") == parse_size("8gib") == 8 * GiB
    assert (
        parse_size("1500M") == 1500 * MiB
        and parse_size(4096) == 4096
        and parse_size("2.5g") == int(2.5 * GiB)
    )
    for bad in ("eight", "-1G", "0", "8X", ""):
        with pytest.raises(ValueError, match="max_memory"):
            parse_size(bad)


def test_estimate_counts_batch_post_processing_and_queues():
    f = fp()
    one, two = host_estimate(f, 1, PIPE), host_estimate(f, 2, PIPE)
    assert two - one == f.host_per_tile + f.tile_bytes
    assert one == f.host_fixed + f.host_per_tile + 2 * f.post_per_worker + 5 * f.tile_bytes
    # what the process already holds replaces the probe's base when larger (e.g. PyTorch after an export)
    assert host_estimate(f, 1, PIPE, held=2 * GiB) == one - f.host_fixed + 2 * GiB


def test_cpu_default_is_one_tile_and_gpu_default_the_largest_batch_that_fits():
    f = fp()
    roomy = Available(64 * GiB, "MemAvailable")
    cpu = choose_batch(f, requested=None, preferred=1, max_batch=8, host=roomy, pipeline=PIPE)
    assert cpu.batch == 1
    gpu = choose_batch(f, requested=None, preferred=8, max_batch=8, host=roomy, pipeline=PIPE)
    assert gpu.batch == 8
    # 3 GiB: 0.3 fixed + 0.08 post + queue tiles + b x 0.51, with 10 % headroom -> 4 tiles, not 5
    tight = Available(3 * GiB, "--max-memory 3G")
    plan = choose_batch(f, requested=None, preferred=8, max_batch=8, host=tight, pipeline=PIPE)
    assert plan.batch == 4, plan.describe()
    assert host_estimate(f, 4, PIPE) * 1.1 <= 3 * GiB < host_estimate(f, 5, PIPE) * 1.1
    assert "largest batch up to 8" in plan.reason and "--max-memory 3G" in plan.describe()


def test_a_batch_that_cannot_fit_fails_before_the_run_naming_the_budget():
    f = fp()
    tight = Available(3 * GiB, "--max-memory 3G")
    with pytest.raises(BudgetError) as e:
        choose_batch(f, requested=8, preferred=1, max_batch=8, host=tight, pipeline=PIPE)
    msg = str(e.value)
    assert "batch 8 does not fit" in msg and "--max-memory 3G" in msg and "-b 4" in msg, msg
    with pytest.raises(BudgetError, match="not even one tile fits"):
        choose_batch(
            f, requested=None, preferred=1, max_batch=8, host=Available(GiB // 2, "x"), pipeline=PIPE
        )
    # a batch that fits is taken as asked
    ok = choose_batch(f, requested=3, preferred=1, max_batch=8, host=tight, pipeline=PIPE)
    assert ok.batch == 3 and ok.reason.startswith("as asked")


def _device(free_gib: float, total_gib: float, integrated: bool) -> DeviceBudget:
    # FAKE PROBE: the fields `engine.cuda_probe.probe_device` fills from cudaGetDeviceProperties and
    # cudaMemGetInfo, figures chosen here (a discrete 24 GiB card; a 16 GiB Jetson Orin NX sharing its DRAM)
    dev = CudaDevice(
        index=0,
        name="FAKE PROBE (no GPU here)",
        compute_capability=(8, 7),
        sm_count=8,
        total_memory=int(total_gib * GiB),
        free_memory=int(free_gib * GiB),
        integrated=integrated,
        driver_version=12060,
        runtime_version=12060,
    )
    return DeviceBudget.from_probe(dev)


def test_device_memory_limits_the_batch_and_an_integrated_gpu_shares_the_host_budget():
    # SAM-H-like figures: 2 GiB of engine + 1.5 GiB activations per 1024 px tile on the device
    f = fp(per_tile=0.2 * GiB, dev_fixed=2 * GiB, dev_tile=1.5 * GiB)
    host = Available(12 * GiB, "MemAvailable")

    def plan(device, requested=None):
        return choose_batch(
            f, requested=requested, preferred=8, max_batch=8, host=host, pipeline=PIPE, device=device
        )

    assert plan(_device(20, 24, False)).batch == 8
    discrete = plan(_device(10, 24, False))
    assert discrete.batch == 4  # (2 + 4 x 1.5) x 1.1 = 8.8 <= 10 < (2 + 5 x 1.5) x 1.1
    assert "device 8.00 GiB of 10.00 GiB free" in discrete.describe()
    # a Jetson: host and device draw on one 12 GiB: their sum must fit, fewer tiles than on a 20 GiB card
    shared = plan(_device(12, 16, True))
    assert shared.batch == 4
    assert (host_estimate(f, 4, PIPE) + shared.device_estimate) * 1.1 <= 12 * GiB
    assert (host_estimate(f, 5, PIPE) + f.device_fixed + 5 * f.device_per_tile) * 1.1 > 12 * GiB
    with pytest.raises(BudgetError, match="shared with the host"):
        plan(_device(12, 16, True), requested=8)


def _tree(tmp_path, files: dict[str, str]):
    for rel, text in files.items():
        p = tmp_path / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    return tmp_path


MEMINFO = "MemTotal:       24683568 kB\nMemFree: 1000 kB\nMemAvailable:   12189748 kB\n"


def test_available_memory_reads_meminfo_and_the_tighter_cgroup_limit(tmp_path):
    # no cgroup limit (cgroup v1 reports a page-rounded LONG_MAX): MemAvailable
    root = _tree(
        tmp_path / "v1free",
        {
            "proc/meminfo": MEMINFO,
            "proc/self/cgroup": "4:memory:/job\n0::/\n",
            "sys/fs/cgroup/memory/job/memory.limit_in_bytes": "9223372036854771712\n",
            "sys/fs/cgroup/memory/job/memory.usage_in_bytes": "20269694976\n",
        },
    )
    assert available_host(root) == Available(12189748 * 1024, "MemAvailable")
    # cgroup v1 limit of 4 GiB, 1.5 GiB used of which 0.5 GiB reclaimable page cache: 3 GiB left
    root = _tree(
        tmp_path / "v1",
        {
            "proc/meminfo": MEMINFO,
            "proc/self/cgroup": "4:memory:/job\n",
            "sys/fs/cgroup/memory/job/memory.limit_in_bytes": f"{4 * GiB}\n",
            "sys/fs/cgroup/memory/job/memory.usage_in_bytes": f"{3 * GiB // 2}\n",
            "sys/fs/cgroup/memory/job/memory.stat": f"cache 1\ntotal_inactive_file {GiB // 2}\n",
        },
    )
    a = available_host(root)
    assert a.bytes == 3 * GiB and "memory.limit_in_bytes" in a.source
    # cgroup v2, the limit on a parent of the process's cgroup; the container's own cgroup mounted as root
    root = _tree(
        tmp_path / "v2",
        {
            "proc/meminfo": MEMINFO,
            "proc/self/cgroup": "0::/pod/ctr\n",
            "sys/fs/cgroup/pod/memory.max": f"{2 * GiB}\n",
            "sys/fs/cgroup/pod/memory.current": f"{GiB}\n",
            "sys/fs/cgroup/pod/ctr/memory.max": "max\n",
            "sys/fs/cgroup/pod/ctr/memory.current": f"{GiB}\n",
        },
    )
    a = available_host(root)
    assert a.bytes == GiB and "memory.max" in a.source


def test_footprint_arithmetic_and_a_probe_killed_at_batch_two():
    steps = {
        "loaded": {"peak": 400 * MiB, "rss": 300 * MiB, "device_free": None},
        "batch1": {"peak": 900 * MiB, "device_free": None},
        "batch2": {"peak": 1500 * MiB, "device_free": None},
        "post": {"extra": 40 * MiB},
        "tile_bytes": 9 * MiB,
        "tile_size": 1024,
        "backend": "onnxruntime",
    }
    f = _result(steps, 0, "")
    assert f.host_per_tile == 600 * MiB and f.host_fixed == 400 * MiB and f.device_fixed is None
    killed = {k: v for k, v in steps.items() if k != "batch2"}
    f = _result(killed, -9, "")
    assert f.host_per_tile == 600 * MiB and f.notes  # batch 1 over the loaded backend: an over-estimate
    with pytest.raises(FootprintError, match="signal 9.*out of memory"):
        _result({"loaded": steps["loaded"]}, -9, "")
    # device: free memory before activation, after batch 1 and batch 2 (figures as a GPU probe would give)
    gpu = {
        **steps,
        "device_free_start": 20 * GiB,
        "batch1": {"peak": 900 * MiB, "device_free": 16 * GiB},
        "batch2": {"peak": 1500 * MiB, "device_free": 15 * GiB},
    }
    f = _result(gpu, 0, "")
    assert f.device_per_tile == GiB and f.device_fixed == 3 * GiB


def test_device_peak_is_the_largest_drop_of_free_memory():
    frees = iter([10 * GiB, 7 * GiB, 6 * GiB, 8 * GiB])  # start, then after each batch
    peak = DevicePeak(lambda: next(frees))
    for _ in range(3):
        peak.sample()
    assert peak.peak_bytes == 4 * GiB


def test_max_memory_setting_is_checked_where_it_is_given(tmp_path):
    from cellvit_trt.config import resolve
    from cellvit_trt.errors import ConfigError
    from cellvit_trt.runtime.settings import RunSettings

    assert resolve(RunSettings, {"max_memory": "12G"}).max_memory == "12G"
    assert resolve(RunSettings, {}).batch is None  # chosen from the budget unless given
    cfg = tmp_path / "run.yaml"
    cfg.write_text("run:\n  max_memory: lots\n")
    with pytest.raises(ConfigError, match=r"run\.yaml.*max_memory: got 'lots'"):
        resolve(RunSettings, {"config": cfg}, section="run")
