"""The C++ example client (examples/scanner_client, gRPC C++ and OpenSlide's C API from the distribution's
packages) built with CMake and run against a real server: its cells equal those of `cellvit-trt run`.

Skipped, with the reason, where the toolchain or the packages are missing; CI installs them (.ci/run).
"""

from __future__ import annotations

import json
import shutil
import subprocess

import numpy as np
import pytest
from tests.serve.conftest import ROOT, canonical

from cellvit_trt.serve.client import slide_tiles

SRC = ROOT / "examples" / "scanner_client"
BUILD = ROOT / "build" / "scanner_client"  # kept between runs: CMake rebuilds only what changed


def _missing() -> str | None:
    for tool in ("cmake", "c++", "pkg-config", "protoc", "grpc_cpp_plugin"):
        if shutil.which(tool) is None:
            return f"no {tool}"
    for pc in ("grpc++", "protobuf"):
        if subprocess.run(["pkg-config", "--exists", pc]).returncode != 0:
            return f"pkg-config finds no {pc}"
    return None


@pytest.fixture(scope="module")
def cxx_client():
    why = _missing()
    if why:
        pytest.skip(
            f"C++ scanner client not built: {why} (apt-get install cmake g++ pkg-config libgrpc++-dev "
            "protobuf-compiler-grpc libprotobuf-dev protobuf-compiler libopenslide-dev)"
        )
    for cmd in (
        ["cmake", "-S", str(SRC), "-B", str(BUILD), "-DCMAKE_BUILD_TYPE=Release"],
        ["cmake", "--build", str(BUILD), "-j2"],
    ):
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return BUILD / "scanner_client"


def _run(exe, *args, timeout=180):
    return subprocess.run([str(exe), *map(str, args)], capture_output=True, text=True, timeout=timeout)


def _cells(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_cxx_client_streams_a_slide_read_with_openslide(cxx_client, server, serve_world, run_cells, tmp_path):
    if subprocess.run(["pkg-config", "--exists", "openslide"]).returncode != 0:
        pytest.skip("built without OpenSlide (apt-get install libopenslide-dev)")
    out = tmp_path / "cells.jsonl"
    done = _run(
        cxx_client, "--target", server.target, "--slide", serve_world["slide_a"], "--tile", 256,
        "--id", "cxx_openslide", "--cells", out,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert canonical(_cells(out)) == run_cells["slide_a"]
    written = json.loads((server.out / "cxx_openslide" / "cells.json").read_text())["cells"]
    assert canonical(written) == run_cells["slide_a"]
    assert f"{len(run_cells['slide_a'])} cells" in done.stdout


def test_cxx_client_streams_a_raw_tile_folder(cxx_client, server, serve_world, run_cells, tmp_path):
    w, h, mpp, tiles = slide_tiles(serve_world["slide_b"], 300)
    folder = tmp_path / "tiles"
    folder.mkdir()
    for x, y, rgb in tiles:
        (folder / f"x{x}_y{y}_w{rgb.shape[1]}_h{rgb.shape[0]}.rgb").write_bytes(
            np.ascontiguousarray(rgb).tobytes()
        )
    out = tmp_path / "cells.jsonl"
    done = _run(
        cxx_client, "--target", server.target, "--tiles", folder, "--width", w, "--height", h, "--mpp", mpp,
        "--id", "cxx_folder", "--cells", out,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert canonical(_cells(out)) == run_cells["slide_b"]


def test_cxx_client_reports_a_failed_slide(cxx_client, server, tmp_path):
    folder = tmp_path / "bad"
    folder.mkdir()
    (folder / "x0_y0_w10_h10.rgb").write_bytes(b"\0" * 299)  # one byte short
    done = _run(cxx_client, "--target", server.target, "--tiles", folder, "--width", 100, "--height", 100,
                "--mpp", 0.25, "--id", "cxx_bad")  # fmt: skip
    assert done.returncode == 1 and "299 bytes of RGB, expected 10x10x3 = 300" in done.stderr
