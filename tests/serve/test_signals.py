"""SIGTERM stops `cellvit-trt serve` whichever of its threads the kernel hands the signal to.

A process-directed signal goes to any thread that does not block it; gRPC's and ONNX Runtime's threads are
as likely as the main one. CPython then only sets a flag, and its handler runs when the main thread next
wakes: a main thread asleep in an unbounded wait never stops (CI saw it as a server killed after 30 s).
The test directs the signal at a worker thread with tgkill, so it fails every time on such a wait.
"""

from __future__ import annotations

import ctypes
import os
import platform
import signal
import subprocess

import pytest
from tests.serve.conftest import start_server

_TGKILL = {"x86_64": 234, "aarch64": 131}.get(platform.machine())


@pytest.mark.skipif(_TGKILL is None or not hasattr(os, "sched_getaffinity"), reason="Linux x86_64/aarch64")
def test_sigterm_handed_to_a_worker_thread_stops_the_server(serve_world, tmp_path):
    srv = start_server(serve_world["model"], tmp_path / "out", f"unix://{tmp_path}/s.sock")
    pid = srv.proc.pid
    workers = sorted(int(t) for t in os.listdir(f"/proc/{pid}/task") if int(t) != pid)
    assert workers, "the server runs no thread besides its main one"
    libc = ctypes.CDLL(None, use_errno=True)
    assert libc.syscall(_TGKILL, pid, workers[-1], int(signal.SIGTERM)) == 0, os.strerror(ctypes.get_errno())
    try:
        rc = srv.proc.wait(30)
    except subprocess.TimeoutExpired:
        rc = srv.stop()  # dumps the server's threads into its log, then kills it
        log = "".join(srv.log)
        pytest.fail(f"SIGTERM on thread {workers[-1]} did not stop the server (rc {rc}):\n{log}")
    assert rc == 0, "".join(srv.log)
    assert "stopping" in "".join(srv.log)
