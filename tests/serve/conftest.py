"""A real `cellvit-trt serve` process (ONNX Runtime, the colour-segmentation graph of the runtime tests) and
real synthetic slides; `cellvit-trt run` on the same slides gives the cells to compare with."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

pytest.importorskip("grpc", reason="the serve extra (grpcio) is not installed: pip install '.[serve]'")

from tests.runtime.test_e2e import COMMON, STRIDE, colour_graph, write_slide  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
SERVER_FLAGS = ["--backend", "onnxruntime", "-b", "4", "-j", "2", "--threads", "1"]


class Server:
    def __init__(self, proc: subprocess.Popen, target: str, out: Path, log: list[str]) -> None:
        self.proc, self.target, self.out, self.log = proc, target, out, log

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.send_signal(signal.SIGUSR1)  # the server's thread stacks go into its log
                time.sleep(2)
                self.proc.kill()
                self.proc.wait(10)
        return self.proc.returncode


def start_server(
    model: Path, out: Path, listen: str, *extra: str, timeout: float = 180, flags: list[str] = SERVER_FLAGS
) -> Server:
    env = {**os.environ, "NUMBA_CACHE_DIR": os.environ.get("NUMBA_CACHE_DIR", str(ROOT / ".numba_cache"))}
    cmd = [sys.executable, "-m", "cellvit_trt.cli", "serve", "-m", str(model), "-o", str(out)]
    proc = subprocess.Popen(
        [*cmd, "--listen", listen, *flags, *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=ROOT,
        env=env,
    )
    log: list[str] = []
    ready = threading.Event()
    where: list[str] = []

    def read() -> None:
        for line in proc.stdout:
            log.append(line)
            if "listening on" in line and not ready.is_set():
                where.append(line.split("listening on ", 1)[1].split(" ")[0])
                ready.set()
        ready.set()

    threading.Thread(target=read, daemon=True).start()
    t0 = time.monotonic()
    while not ready.wait(0.2):
        if time.monotonic() - t0 > timeout:
            proc.kill()
            pytest.fail("cellvit-trt serve did not start:\n" + "".join(log))
    if not where:
        pytest.fail("cellvit-trt serve exited:\n" + "".join(log))
    return Server(proc, where[0], out, log)


@pytest.fixture(scope="session")
def serve_world(tmp_path_factory):
    d = tmp_path_factory.mktemp("serve")
    model = colour_graph(d / "colour.onnx")
    write_slide(d / "slide_a.svs", 3 * STRIDE, 4 * STRIDE, seed=7)  # 3 x 4 model tiles
    write_slide(d / "slide_b.svs", 2 * STRIDE + 50, 3 * STRIDE + 70, seed=11)  # 3 x 4, cut edges
    return {"dir": d, "model": model, "slide_a": d / "slide_a.svs", "slide_b": d / "slide_b.svs"}


@pytest.fixture(scope="session")
def server(serve_world):
    d = serve_world["dir"]
    srv = start_server(serve_world["model"], d / "out", f"unix://{d}/serve.sock", "--keep-seconds", "120")
    yield srv
    assert srv.stop() == 0, "".join(srv.log)


def canonical(cells: list[dict]) -> list[dict]:
    """Cells without ids in a canonical order (ids follow arrival order, which the scan decides)."""
    cells = [{k: v for k, v in c.items() if k != "cell_id"} for c in cells]
    return sorted(cells, key=lambda c: json.dumps(c, sort_keys=True))


@pytest.fixture(scope="session")
def run_cells(serve_world):
    """`cellvit-trt run` on each slide (no tissue detection: the scanner sends every tile)."""
    from cellvit_trt.cli import main

    out = {}
    for key in ("slide_a", "slide_b"):
        dest = serve_world["dir"] / "run"
        args = ["run", str(serve_world[key]), "-m", str(serve_world["model"]), "--no-tissue", "-o", str(dest)]
        assert main([*args, *COMMON, "--outputs", "cells"]) == 0
        out[key] = canonical(json.loads((dest / key / "cells.json").read_text())["cells"])
    return out
