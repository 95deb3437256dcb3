"""`serve` plans its batch from the memory budget as `run` does (issue 13): without `-b` the batch is chosen
from the model's measured footprint over every slide the server may hold, and printed with the reason; a
budget that cannot hold one batch stops the server before it listens, naming the budget."""

from __future__ import annotations

import subprocess
import sys

from tests.serve.conftest import ROOT, SERVER_FLAGS, start_server


def test_the_default_batch_is_planned_from_the_budget_and_printed(serve_world, tmp_path):
    flags = [f for i, f in enumerate(SERVER_FLAGS) if f != "-b" and SERVER_FLAGS[i - 1] != "-b"]
    assert "-b" not in flags
    srv = start_server(serve_world["model"], tmp_path / "out", f"unix://{tmp_path}/s.sock", flags=flags)
    try:
        plan = [line for line in srv.log if line.startswith("cellvit-trt serve: batch ")]
        assert plan, "".join(srv.log)
        # ONNX Runtime on the CPU: batch 1 is what the plan prefers, and the budget is the machine's
        assert plan[0].startswith("cellvit-trt serve: batch 1: CPU backend"), plan[0]
        assert "estimated peak" in plan[0] and "budget" in plan[0]
    finally:
        assert srv.stop() == 0, "".join(srv.log)


def test_a_budget_too_small_for_one_batch_stops_the_server_before_it_listens(serve_world, tmp_path):
    sock = tmp_path / "s.sock"
    cmd = [sys.executable, "-m", "cellvit_trt.cli", "serve", "-m", str(serve_world["model"])]
    cmd += ["-o", str(tmp_path / "out"), "--listen", f"unix://{sock}", *SERVER_FLAGS, "--max-memory", "1M"]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "batch 4 does not fit the memory budget" in proc.stderr, proc.stderr
    assert "--max-memory 1M" in proc.stderr and "listening on" not in proc.stdout + proc.stderr
    assert not sock.exists()


def test_wide_slides_row_buffers_are_admitted_only_within_what_the_plan_left(server, serve_world, tmp_path):
    """A slide's row buffers grow with its width (3 rows of 256-px model tiles, 4 bytes per pixel: ~3 KiB per
    column); the server refuses a slide whose buffers, with those of the slides it holds, exceed what the
    memory plan left, and admits it again once room is freed."""
    import re

    import grpc
    import pytest

    from cellvit_trt.serve.client import ScannerClient, SlideFailed

    line = next(x for x in server.log if x.startswith("cellvit-trt serve: batch "))
    peak_gib = float(re.search(r"estimated peak ([0-9.]+) GiB", line).group(1))
    budget_mib = int(peak_gib * 1024 * 1.1) + 200  # about 200 MiB left for row buffers
    srv = start_server(
        serve_world["model"], tmp_path / "out", f"unix://{tmp_path}/s.sock", "--max-memory", f"{budget_mib}M"
    )
    try:
        with ScannerClient(srv.target) as client:
            with pytest.raises(SlideFailed) as wide:  # ~1.2 GiB of row buffers
                client.open_slide("wide", 400_000, 1_000, 0.25)
            assert wide.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "row buffers" in wide.value.details and f"--max-memory {budget_mib}M" in wide.value.details
            first = client.open_slide("a", 40_000, 1_000, 0.25)  # ~120 MiB: fits
            with pytest.raises(SlideFailed) as second:  # ~120 MiB more: not beside the first
                client.open_slide("b", 40_000, 1_000, 0.25)
            assert second.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "the 1 slides held take" in second.value.details
            with pytest.raises(SlideFailed):
                first.discard()
                first._raise()
            client.open_slide("b", 40_000, 1_000, 0.25).discard()  # room again
    finally:
        assert srv.stop() == 0, "".join(srv.log)
