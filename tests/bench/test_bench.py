"""`cellvit-trt bench`: statistics conventions, projection arithmetic, and a real run of the command."""

from __future__ import annotations

import json

import numpy as np
import pytest

from cellvit_trt.bench.measure import measure, slide_projection
from cellvit_trt.bench.stats import summarize_ms


def test_summary_uses_nearest_rank_percentiles_in_ms():
    samples = [i / 1000 for i in range(1, 101)]  # 1..100 ms
    s = summarize_ms(samples)
    assert s["min"] == pytest.approx(1.0) and s["max"] == pytest.approx(100.0)
    assert s["mean"] == pytest.approx(50.5) and s["median"] == pytest.approx(50.5)
    assert s["p90"] == pytest.approx(91.0) and s["p99"] == pytest.approx(100.0)
    assert s["stdev"] == pytest.approx(np.std(np.arange(1, 101)), rel=1e-9)
    assert np.isnan(summarize_ms([])["mean"])


def test_projection_counts_tiles_at_stride():
    # 15 x 15 mm at 0.25 mpp = 60,000 px square = 3.6e9 px; at stride 960: 3.6e9 / 921,600 = 3906.25 tiles.
    p = slide_projection(tiles_per_s=10.0, tissue_area_mm2=225.0, mpp=0.25, stride=960)
    assert p["tiles"] == pytest.approx(3906.25)
    assert p["minutes_per_slide"] == pytest.approx(3906.25 / 10.0 / 60.0)


def test_measure_counts_iterations_and_rejects_bad_input():
    calls = []

    def infer(x):
        calls.append(x.shape)
        return {"fg": np.zeros(x.shape[:3], np.uint8)}

    m = measure(infer, np.zeros((2, 16, 16, 3), np.uint8), warmup_s=0.0, min_warmup_iters=3, iterations=5)
    assert m.batches == 5 and len(calls) == 8  # 3 warm-up + 5 timed
    assert m.tiles_per_s > 0 and m.to_dict()["latency_ms"]["min"] <= m.to_dict()["latency_ms"]["max"]
    slow = measure(infer, np.zeros((1, 16, 16, 3), np.uint8), warmup_s=0.0, duration_s=1e-9, min_iterations=4)
    assert slow.batches == 4  # the duration is over at once, yet a minimum of batches is timed
    with pytest.raises(ValueError, match=r"uint8 \[N,H,W,3\]"):
        measure(infer, np.zeros((2, 16, 16), np.uint8), iterations=1)


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    torch = pytest.importorskip("torch")
    from cellvit_trt.models import build_model, save_checkpoint

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("bench") / "tiny.pth"
    save_checkpoint(path, build_model("tiny"))
    return path


def test_bench_command_end_to_end(tiny_checkpoint, tmp_path, capsys):
    from cellvit_trt.cli import main

    out_json, chart = tmp_path / "bench.json", tmp_path / "bench.png"
    rc = main(
        [
            "bench",
            str(tiny_checkpoint),
            "--backend",
            "torch",
            "--tile-size",
            "256",
            "--batch",
            "2",
            "--warmup",
            "0",
            "--iterations",
            "2",
            "--post-threads",
            "1",
            "--slide-tiles",
            "1",
            "--json",
            str(out_json),
            "--chart",
            str(chart),
        ]
    )
    assert rc == 0
    table = capsys.readouterr().out
    assert "tiles/s" in table and "p99" in table and "End to end" in table
    r = json.loads(out_json.read_text())
    assert r["compute"]["batches"] == 2 and r["compute"]["batch"] == 2 and r["compute"]["tile_size"] == 256
    assert set(r["compute"]["latency_ms"]) >= {"min", "mean", "median", "p90", "p95", "p99", "max"}
    assert r["postprocess"][0]["threads"] == 1
    e2e = r["end_to_end"]["timing"]
    # a 1-tile synthetic slide is one stride (192 px) square: the upstream grid covers it with one tile
    assert e2e["tiles"] == 1 and r["end_to_end"]["cells"] >= 0
    assert 0.0 <= e2e["backend_wait_fraction"] <= 1.0
    assert r["projection"]["minutes_per_slide"] > 0
    assert chart.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # peak host RSS of the bench process; no GPU backend here: peak device memory is null, not a number
    assert r["memory"]["peak_host_rss_mb"] > 100 and r["memory"]["peak_device_mb"] is None
    assert "peak device memory n/a (no GPU backend)" in table
