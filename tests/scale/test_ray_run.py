"""`cellvit-trt run --ray` on a real Ray on this machine (ONNX Runtime, the demo model, synthetic slides):

- three slides through Ray equal the local runs (cell sets, counts per class), and a corrupt slide among them
  fails alone with the local run's message (exit 1) — through the CLI's own local Ray start;
- SIGKILL of the worker running a slide (its PID as the worker reported it through Ray, in run.json): the
  slide is retried in another worker, resumes its journal, and its cells equal the local run's;
- Ctrl-C (SIGINT) on the driver: exit 130, the running slide stops with its journal kept and no partial file,
  the finished one stays; the same command again skips the finished slide and resumes the other.

The last two share one Ray cluster (`ray start --head --block` in a session of its own, files under pytest's
tmp, every process of that session killed at the end). Each driver is a CLI process of its own.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from scale_helpers import ROOT, RUN, cell_set, cli, entry, env, leftovers, per_class, run_json

from cellvit_trt.cli import main

pytest.importorskip("ray")
psutil = pytest.importorskip("psutil")

WAIT_S = 300  # generous: CI machines are often loaded; nothing here is timed


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("", 0))
        return s.getsockname()[1]


def _session_processes(sid: int) -> list:
    out = []
    for p in psutil.process_iter():
        try:
            if os.getsid(p.pid) == sid:
                out.append(p)
        except (ProcessLookupError, PermissionError, psutil.Error):
            continue
    return out


def _kill_session(sid: int) -> None:
    for p in _session_processes(sid):
        try:
            p.kill()
        except psutil.Error:
            pass
    psutil.wait_procs(_session_processes(sid), timeout=30)


def _processes_under(folder: Path) -> list[str]:
    """Processes whose command line names `folder` (a Ray started with its files there)."""
    found = []
    for p in psutil.process_iter(["cmdline"]):
        cmd = " ".join(p.info["cmdline"] or [])
        if str(folder) in cmd:
            found.append(f"{p.pid}: {cmd[:120]}")
    return found


def short_tmp() -> Path:
    """A folder for Ray's files directly under /tmp: its socket paths must stay under 108 bytes, which
    pytest's own folders (deeper still under xdist's popen-gwN/) do not leave room for."""
    path = Path(tempfile.mkdtemp(prefix="ray", dir="/tmp"))
    _SHORT.append(path)
    return path


_SHORT: list[Path] = []


@pytest.fixture(scope="module", autouse=True)
def _remove_short_tmps():
    yield
    for path in _SHORT:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def head():
    """A one-node Ray cluster with 2 CPUs, as `ray start --head` makes it; yields its address."""
    tmp = short_tmp()
    ray_cli = Path(sys.executable).parent / "ray"
    args = [
        str(ray_cli),
        "start",
        "--head",
        "--block",
        "--num-cpus=2",
        f"--temp-dir={tmp}",
        f"--port={_free_port()}",
        f"--ray-client-server-port={_free_port()}",
        f"--dashboard-agent-listen-port={_free_port()}",
        "--include-dashboard=false",
        "--disable-usage-stats",
    ]
    log = open(tmp / "head.log", "w")  # noqa: SIM115 - closed at teardown
    proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=env(), start_new_session=True)
    try:
        marker = tmp / "ray_current_cluster"
        deadline = time.monotonic() + WAIT_S
        while not marker.is_file() or not marker.read_text().strip():
            assert proc.poll() is None, (tmp / "head.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "ray start did not come up"
            time.sleep(0.5)
        yield marker.read_text().strip()
    finally:
        _kill_session(proc.pid)
        proc.wait(timeout=30)
        log.close()
        assert _session_processes(proc.pid) == []


@pytest.fixture(scope="module")
def local(demo_onnx, slides, tmp_path_factory):
    """The reference: the same slides through plain `cellvit-trt run` (one process, no Ray)."""
    out = tmp_path_factory.mktemp("local")
    names = ("s0", "s1", "s2", "bad")
    rc = main(["run", *(str(slides[n]) for n in names), "-m", str(demo_onnx), "-o", str(out), "-q", *RUN])
    assert rc == 1  # bad.svs
    return out


def _committed(folder: Path) -> int:
    try:
        chunks = json.loads((folder / ".resume" / "manifest.json").read_text())["chunks"]
    except (OSError, ValueError, KeyError):
        return 0
    return sum(c["tiles"] for c in chunks)


def _wait(cond, proc, what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not cond():
        if proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"the driver exited ({proc.returncode}) before {what}: {err[-3000:]}")
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def _default_sigint() -> None:
    # as in a terminal: a test runner started in the background (`cmd &` in a script) ignores SIGINT, and a
    # child would inherit that and never see the Ctrl-C this test sends
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _driver(args: list[str], **extra_env: str) -> subprocess.Popen:
    code = "import sys\nfrom cellvit_trt.cli import main\nsys.exit(main(sys.argv[1:]))"
    return subprocess.Popen(
        [sys.executable, "-c", code, *map(str, args)],
        preexec_fn=_default_sigint,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env(**extra_env),
        cwd=ROOT,
    )


def _same_as_local(out: Path, local: Path, name: str) -> None:
    assert cell_set(out / name) == cell_set(local / name), f"{name}: cells differ from the local run"
    assert per_class(out / name) == per_class(local / name)
    assert entry(out, name)["cells"] == entry(local, name)["cells"] > 20


def test_slides_through_ray_equal_local_runs_and_a_corrupt_one_fails_alone(
    demo_onnx, slides, local, tmp_path
):
    """`--ray` without ADDRESS: the CLI starts Ray on this machine (RAY_TMPDIR puts its files here) and stops
    it at the end; two workers of 1 CPU each take the four inputs."""
    out = tmp_path / "out"
    ray_tmp = short_tmp()
    names = ("s0", "s1", "s2", "bad")
    r = cli(
        ["run", *(slides[n] for n in names), "-m", demo_onnx, "-o", out, *RUN]
        + ["--ray", "--ray-cpus-per-slide", "1"],
        {"RAY_TMPDIR": str(ray_tmp)},
    )
    assert r.returncode == 1 and (out / "run.json").is_file(), r.stderr[-3000:]
    job = run_json(out)
    assert job["status"] == "done" and job["failed"] == 1 and job["counts"] == {"ok": 3, "failed": 1}
    assert job["executor"]["kind"] == "ray" and job["executor"]["placement"]["workers"] == 2
    assert len({w["pid"] for w in job["executor"]["workers"]}) == 2
    for name in ("s0", "s1", "s2"):
        _same_as_local(out, local, name)
        worker = entry(out, name)["worker"]
        assert worker["attempts"] == 1 and worker["pid"] in {w["pid"] for w in job["executor"]["workers"]}
    bad = entry(out, "bad")
    assert bad["status"] == "failed" and bad["error"] == entry(local, "bad")["error"]
    assert f"cellvit-trt run: error: {bad['error']}" in r.stderr
    assert "1 of 4 inputs failed" in r.stderr
    assert leftovers(out) == []
    deadline = time.monotonic() + 30  # the driver's ray.shutdown() stopped the Ray it started
    while _processes_under(ray_tmp) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert _processes_under(ray_tmp) == []


def test_killed_worker_slide_is_retried_elsewhere_and_resumes(head, demo_onnx, slides, local, tmp_path):
    out = tmp_path / "out"
    args = ["run", slides["s1"], slides["s2"], "-m", demo_onnx, "-o", out, *RUN]
    args += ["--ray", head, "--ray-cpus-per-slide", "1", "--ray-workers", "2"]
    proc = _driver(args, CELLVIT_TRT_FAULT_STALL="s1:4")  # s1's first attempt holds after 4 tiles
    try:
        _wait(lambda: _committed(out / "s1") >= 4, proc, "s1 committed 4 tiles")
        victim = entry(out, "s1")["worker"]["pid"]
        assert "SlideWorker" in " ".join(psutil.Process(victim).cmdline()), "the PID is a Ray worker's"
        os.kill(victim, signal.SIGKILL)
        stdout, stderr = proc.communicate(timeout=WAIT_S)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, stderr[-3000:]
    assert "s1.svs: its worker died; retrying" in stderr
    s1 = entry(out, "s1")
    assert s1["status"] == "ok" and s1["worker"]["attempts"] == 2 and s1["worker"]["pid"] != victim
    assert s1["tiles_resumed"] >= 4, "the retry continued from the journal"
    _same_as_local(out, local, "s1")
    _same_as_local(out, local, "s2")
    assert not (out / "s1" / ".resume").exists()
    assert leftovers(out) == [], "the killed attempt's partial files were recovered by the retry's claim"
    # what a reader sees is complete: every visible file of the folder is a finished output
    assert sorted(p.name for p in (out / "s1").iterdir() if not p.name.startswith(".")) == [
        "cell_detection.json",
        "cells.json",
        "summary.json",
    ]
    assert json.loads((out / "s1" / "summary.json").read_text())["cells"] == s1["cells"]


def test_ctrl_c_stops_running_slides_cleanly_and_the_same_command_resumes(
    head, demo_onnx, slides, local, tmp_path
):
    out = tmp_path / "out"
    args = ["run", slides["s0"], slides["s2"], "-m", demo_onnx, "-o", out, *RUN, "--resume"]
    args += ["--ray", head, "--ray-cpus-per-slide", "1", "--ray-workers", "2"]
    proc = _driver(args, CELLVIT_TRT_FAULT_STALL="s0:4")
    try:
        _wait(
            lambda: _committed(out / "s0") >= 4 and (out / "s2" / ".done.json").is_file(),
            proc,
            "s0 committed 4 tiles and s2 finished",
        )
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=WAIT_S)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, stderr[-3000:]
    job = run_json(out)
    assert job["status"] == "interrupted"
    assert entry(out, "s0")["status"] == "interrupted" and entry(out, "s2")["status"] == "ok"
    assert not (out / "s0" / "cells.json").exists() and _committed(out / "s0") >= 4
    assert leftovers(out) == [], "a stopped slide leaves no partial file"
    again = cli(args)
    assert again.returncode == 0, again.stderr[-3000:]
    assert entry(out, "s2")["status"] == "skipped"
    s0 = entry(out, "s0")
    assert s0["status"] == "ok" and s0["tiles_resumed"] >= 4
    _same_as_local(out, local, "s0")
    _same_as_local(out, local, "s2")
    assert leftovers(out) == []
