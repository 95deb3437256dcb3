"""Scale-out without a cluster: the single-machine path never imports Ray, nothing in the package can shadow
it, `--ray` is parsed strictly, and placement by resources follows the backend and the cluster's nodes."""

from __future__ import annotations

import io
import re
import subprocess
import sys
import types

import pytest
from scale_helpers import ROOT, RUN, env

from cellvit_trt.cli import main
from cellvit_trt.errors import DependencyError, DeviceError
from cellvit_trt.runtime.settings import RunSettings
from cellvit_trt.scale.cluster import place, require_ray, wants_gpu
from cellvit_trt.scale.progress import JobProgress
from cellvit_trt.scale.settings import ScaleSettings


def test_single_machine_run_imports_no_ray(demo_onnx, slides, tmp_path):
    """A real `cellvit-trt run` (ONNX Runtime, a synthetic slide) in a fresh interpreter: no `ray` loaded."""
    code = (
        "import sys\nfrom cellvit_trt.cli import main\nrc = main(sys.argv[1:])\n"
        "print('RAY_LOADED', 'ray' in sys.modules)\n"
        "sys.exit(rc)"
    )
    args = [str(slides["s2"]), "-m", str(demo_onnx), "-o", str(tmp_path / "o"), "-q", *RUN]
    r = subprocess.run(
        [sys.executable, "-c", code, "run", *args],
        capture_output=True,
        text=True,
        env=env(),
        cwd=ROOT,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    assert "RAY_LOADED False" in r.stdout, r.stdout[-2000:]
    assert (tmp_path / "o" / "s2" / "cells.json").is_file()


def test_package_never_replaces_sys_modules_ray():
    """The upstream oracle (which stubs `ray` where it is missing) is a test file, not package code."""
    src = ROOT / "src" / "cellvit_trt"
    assert not (src / "models" / "oracle.py").exists()
    offenders = [
        str(p.relative_to(src))
        for p in src.rglob("*.py")
        if re.search(r"""sys\.modules\[\s*["']ray["']\s*\]\s*=""", p.read_text())
    ]
    assert offenders == []


def test_oracle_imports_the_real_ray_when_it_is_installed():
    """tests/upstream_oracle.py registers its stand-in only where no `ray` can be found (hidden here by a
    find_spec that does not see it); with Ray installed it imports the real module."""
    pytest.importorskip("ray")
    code = (
        "import importlib.util, sys\n"
        f"sys.path.insert(0, {str(ROOT / 'tests')!r})\n"
        "import upstream_oracle\n"
        "def kind():\n"
        "    ray = sys.modules['ray']\n"
        "    stub = getattr(ray, upstream_oracle.RAY_STUB_MARK, False)\n"
        "    init = callable(getattr(ray, 'init', None))\n"
        "    return ('STUB' if stub else 'REAL') + ('+init' if init else '')\n"
        "real = importlib.util.find_spec\n"
        "importlib.util.find_spec = lambda name, *a: None if name == 'ray' else real(name, *a)\n"
        "upstream_oracle._ensure_ray()\n"
        "print(kind())\n"
        "del sys.modules['ray']\n"
        "importlib.util.find_spec = real\n"
        "upstream_oracle._ensure_ray()\n"
        "print(kind())\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env(), timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.split() == ["STUB", "REAL+init"]


def test_a_stand_in_ray_is_refused(monkeypatch):
    stub = types.ModuleType("ray")
    stub.__cellvit_trt_stub__ = True
    monkeypatch.setitem(sys.modules, "ray", stub)
    with pytest.raises(DependencyError, match=r"is not Ray.*cellvit-trt\[ray\]"):
        require_ray()


@pytest.mark.parametrize("argv", [["--ray", "a.svs"], ["--ray", "slides/"], ["--ray=nowhere"]])
def test_ray_address_is_parsed_strictly(argv, capsys):
    """`--ray a.svs b.svs` would take a.svs as the ADDRESS: a usage error that says what to do."""
    assert main(["run", *argv, "b.svs"]) == 2
    err = capsys.readouterr().err
    assert "is not a Ray address" in err and "put --ray after the inputs" in err, err


@pytest.mark.parametrize("address", ["local", "auto", "ray://head:10001", "10.0.0.1:6379", "head-1.lan:6379"])
def test_ray_addresses_accepted(address):
    ScaleSettings(address=address).validate()


def _node(cpu: float, gpu: float = 0.0, alive: bool = True) -> dict:
    """A node as `ray.nodes()` describes it (the fields placement reads)."""
    res = {"CPU": cpu, "memory": 1e10}
    if gpu:
        res["GPU"] = gpu
    return {"Alive": alive, "Resources": res}


def test_placement_cpu_backend_packs_slides_by_cpus():
    s = RunSettings(backend="onnxruntime")
    p = place(s, ScaleSettings(cpus_per_slide=2), [_node(8), _node(4), _node(16, alive=False)], slides=100)
    assert (p.cpus, p.gpus, p.capacity, p.workers, p.nodes) == (2.0, 0.0, 6, 6, 2)
    p = place(s, ScaleSettings(cpus_per_slide=2, workers=3), [_node(8)], slides=100)
    assert p.workers == 3
    p = place(s, ScaleSettings(), [_node(2)], slides=5)  # default 4 CPUs, capped by the largest node
    assert (p.cpus, p.capacity, p.workers) == (2.0, 1, 1)
    assert (
        place(s, ScaleSettings(cpus_per_slide=1), [_node(8)], slides=3).workers == 3
    )  # never more than slides


def test_placement_gpu_backends_ask_one_gpu_per_slide():
    nodes = [_node(32, gpu=4), _node(16, gpu=2), _node(64)]
    trt = place(RunSettings(backend="tensorrt"), ScaleSettings(), nodes, slides=50)
    assert (trt.gpus, trt.cpus, trt.capacity, trt.nodes) == (
        1.0,
        4.0,
        6,
        2,
    )  # GPUs bound it, CPU-only node unused
    few_cpus = place(RunSettings(backend="tensorrt"), ScaleSettings(cpus_per_slide=16), nodes, slides=50)
    assert few_cpus.capacity == 3  # 2 on the 32-CPU node, 1 on the 16-CPU node
    assert wants_gpu(RunSettings(model="x.engine"), 0)
    assert wants_gpu(RunSettings(backend="auto"), 4) and not wants_gpu(RunSettings(backend="auto"), 0)
    assert wants_gpu(RunSettings(backend="onnxruntime", providers=["cuda", "cpu"]), 0)
    assert not wants_gpu(RunSettings(backend="onnxruntime"), 4)
    assert not wants_gpu(RunSettings(backend="torch"), 4)
    with pytest.raises(DeviceError, match="no node of the cluster has a GPU"):
        place(RunSettings(backend="torch-cuda"), ScaleSettings(), [_node(8)], slides=1)


def test_job_progress_rate_and_eta():
    now = [0.0]
    out = io.StringIO()
    bar = JobProgress(10, stream=out, enabled=True, min_interval_s=0, clock=lambda: now[0])
    bar.update(done=0, running=2, failed=0, tiles=0, tiles_per_slide=None, busy_tiles=0, workers=2)
    assert bar.text.endswith("ETA ?")  # no slide finished yet: no estimate
    now[0] = 10.0
    bar.update(done=4, running=2, failed=1, tiles=200, tiles_per_slide=50.0, busy_tiles=30, workers=2)
    # 20 tiles/s; (10 - 4 - 1) slides left x 50 tiles - 30 done by running slides = 220 tiles -> 11 s
    assert bar.text == "slides 4/10 done, 2 running, 1 failed | 2 workers |   20.00 tiles/s | ETA 0:00:11"
    assert out.getvalue().endswith(bar.text + "\x1b[K")
    now[0] = (
        40.0  # the window keeps the samples since 10 s (20 s and the newest older one): 200 tiles in 30 s
    )
    bar.update(done=8, running=1, failed=1, tiles=400, tiles_per_slide=50.0, busy_tiles=0, workers=1)
    assert "6.67 tiles/s" in bar.text
