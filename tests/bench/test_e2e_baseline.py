"""benchmarks/bench_e2e_vs_upstream.py and its helpers, without the upstream venv (the real comparison is a
benchmark, not a CI test): the process-tree measurement counts what Ray-style re-parented processes use, the
cell comparison scores what it claims, and the scripts refuse bad arguments before any expensive step."""

from __future__ import annotations

import importlib.util
import json
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]


def _load(name: str):
    path = ROOT / "benchmarks" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def measure_mod():
    return _load("upstream_measure")


@pytest.fixture(scope="module")
def bench(measure_mod):
    return _load("bench_e2e_vs_upstream")


@pytest.fixture(scope="module")
def driver():
    return _load("upstream_driver")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="child subreaper is Linux-only")
def test_measure_counts_cpu_of_reparented_descendants(measure_mod, tmp_path):
    # the command exits at once; a detached grandchild (as Ray's raylet and workers are) burns CPU after it
    script = tmp_path / "orphan.py"
    script.write_text(
        textwrap.dedent(
            """
            import os, sys, time
            if os.fork() == 0:
                os.setsid()
                if os.fork() == 0:
                    t = time.process_time()
                    while time.process_time() - t < 0.4:
                        pass
                    os._exit(0)
                os._exit(0)
            os.wait()
            sys.exit(3)
            """
        )
    )
    m = measure_mod.measure([sys.executable, str(script)], log=tmp_path / "log")
    assert m.rc == 3
    assert m.cpu_s >= 0.4  # without the subreaper the grandchild's 0.4 s would be lost
    assert m.wall_s < m.cpu_s  # the command itself returned before the grandchild finished
    assert m.orphans_killed == 0
    assert len(m.loadavg_before) == 3 and len(m.loadavg_after) == 3
    assert m.machine_busy_s >= 0.0 and m.others_cpu_s >= 0.0


def test_read_cells_and_class_counts(measure_mod, tmp_path):
    path = tmp_path / "cell_detection.json"
    cells = [{"centroid": [10.0, 20.0], "type": 1, "bbox": [[0, 0], [1, 1]]}, {"centroid": [5, 7], "type": 3}]
    cells.append({"centroid": [1.5, 2.5], "type": 1})
    path.write_text(json.dumps({"wsi_metadata": {}, "type_map": {}, "cells": cells}))
    xy, ty = measure_mod.read_cells(path)
    np.testing.assert_array_equal(xy, [[10, 20], [5, 7], [1.5, 2.5]])
    assert measure_mod.class_counts(ty, {1: "Neoplastic", 3: "Connective"}) == {
        "Neoplastic": 2,
        "Connective": 1,
    }
    path.write_text(json.dumps({"cells": []}))
    xy, ty = measure_mod.read_cells(path)
    assert xy.shape == (0, 2) and ty.shape == (0,)


def test_agreement_scores(measure_mod):
    rng = np.random.default_rng(0)
    gy, gx = np.mgrid[0:1000:50, 0:750:50]  # 20 x 15 cells, 50 px apart
    xy = np.stack([gx.ravel(), gy.ravel()], 1).astype(np.float64)
    ty = rng.integers(1, 6, len(xy))
    agree = measure_mod.agreement
    same = agree(xy, ty, xy.copy(), ty.copy(), 12.0)
    assert same["f1"] == 1.0 and same["type_agreement"] == 1.0 and same["same_pixel_fraction"] == 1.0
    assert agree(xy, ty, xy + 8.0, ty, 12.0)["f1"] == 1.0  # 11.3 px away: inside 12 px
    assert agree(xy, ty, xy + 9.0, ty, 12.0)["matched"] == 0  # 12.7 px: outside
    fewer = agree(xy, ty, xy[:200], 6 - ty[:200], 12.0)
    assert fewer["f1"] == pytest.approx(2 * 200 / 500)
    assert fewer["type_agreement"] == pytest.approx(np.mean(ty[:200] == 6 - ty[:200]))
    assert agree(xy, ty, np.zeros((0, 2)), np.zeros(0), 12.0)["f1"] == 0.0
    assert agree(xy, ty, xy + 0.4, ty, 12.0)["same_pixel_fraction"] == 1.0  # rounds to the same pixel


def _run(mod, wall: float, cpu: float, xy: np.ndarray, types: np.ndarray) -> dict:
    m = mod.Measured(0, wall, cpu, cpu, 0.0, 100.0, [1, 1, 1], [1, 1, 1], cpu, 0.0, 0)
    return {"measured": m, "xy": xy, "types": types, "tiles": 4, "inner_s": wall}


def test_summary_ratios_and_cell_comparison(bench, measure_mod):
    xy = np.array([[100.0, 100.0], [300.0, 300.0]])
    ty = np.array([1, 2])
    runs = {
        "upstream": [_run(measure_mod, w, c, xy, ty) for w, c in ((100, 180), (120, 200), (110, 190))],
        "cellvit-trt onnxruntime": [
            _run(measure_mod, w, c, xy + 8.0, ty) for w, c in ((50, 60), (40, 50), (55, 100))
        ],
    }
    s = bench.summarise(runs)
    assert s["upstream"]["wall_median_s"] == 110 and "wall_ratio" not in s["upstream"]
    ours = s["cellvit-trt onnxruntime"]
    assert ours["wall_ratio"] == pytest.approx(110 / 50) and ours["cpu_ratio"] == pytest.approx(190 / 60)
    assert ours["wall_ratio_range"] == pytest.approx([100 / 50, 120 / 40])  # run i against run i
    assert ours["cpu_ratio_range"] == pytest.approx([190 / 100, 200 / 50])
    # 11.3 px apart: a match within 3 um at 0.25 mpp (12 px), not at 0.5 mpp (6 px)
    at40 = bench.compare_cells(runs, {1: "Neoplastic", 2: "Inflammatory"}, 0.25)
    at20 = bench.compare_cells(runs, {1: "Neoplastic", 2: "Inflammatory"}, 0.5)
    assert at40["cellvit-trt onnxruntime"]["vs_upstream"]["f1"] == 1.0
    assert at20["cellvit-trt onnxruntime"]["vs_upstream"]["f1"] == 0.0
    assert at40["upstream"]["per_class"] == {"Neoplastic": 1, "Inflammatory": 1}
    assert at40["upstream"]["same_count_every_run"]
    runs["upstream"][0]["xy"] = xy[:1]
    assert not bench.compare_cells(runs, {}, 0.25)["upstream"]["same_count_every_run"]


def test_bench_arguments(bench, tmp_path, capsys):
    ck = tmp_path / "ck.pth"
    ck.write_bytes(b"")
    assert bench.parse_slide_spec("synthetic:3x2") == ("synthetic", 3, 2)
    args = bench.parse_args(["--checkpoint", str(ck), "--slides", "synthetic:2x2", str(ck)])
    assert args.slides == [("synthetic", 2, 2), ck] and args.runs == 3 and args.batch >= 1
    for bad in (
        ["--slides", "synthetic:1x4"],
        ["--slides", "synthetic:2by2"],
        ["--slides", str(tmp_path / "no")],
        ["--runs", "0"],
        ["--batch", "0"],
    ):
        with pytest.raises(SystemExit) as exc:
            bench.parse_args(["--checkpoint", str(ck), *bad])
        assert exc.value.code == 2, bad
    # a missing upstream venv is a usage error naming the script that builds it, before any export or run
    code = bench.main(["--checkpoint", str(ck), "--upstream-python", str(tmp_path / "none" / "python")])
    assert code == 2 and "upstream_env.sh" in capsys.readouterr().err


def test_driver_arguments_and_model_cache(driver, tmp_path):
    import torch

    with pytest.raises(SystemExit):
        driver.parse_args(["s.svs", "--checkpoint", "c", "--outdir", "o", "--cpu-count", "2"])  # Ray gets 0
    ok = driver.parse_args(["s.svs", "--checkpoint", "c", "--outdir", "o"])
    assert (ok.batch, ok.cpu_count, ok.ray_worker) == (8, 4, 1)
    # upstream loads the checkpoint from its cache folder under the name it would download
    ck = tmp_path / "mine.pth"
    torch.save({"arch": "CellViT256", "config": {}, "model_state_dict": {}}, ck)
    assert driver.prepare_cache(ck, tmp_path / "cache") == "HIPT"
    assert (tmp_path / "cache" / "CellViT-256-x40-AMP.pth").resolve() == ck.resolve()
    torch.save({"arch": "CellViTCustom", "config": {}, "model_state_dict": {}}, ck)
    with pytest.raises(SystemExit, match="_get_model"):
        driver.prepare_cache(ck, tmp_path / "cache")
