"""The upstream-style baseline of benchmarks/bench_e2e_vs_upstream.py measures what it claims to: it reads the
same pixels as the runtime, its model call equals the model, and its agreement score behaves."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def bench():
    path = ROOT / "benchmarks" / "bench_e2e_vs_upstream.py"
    spec = importlib.util.spec_from_file_location("bench_e2e_vs_upstream", path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


def test_upstream_reader_sees_the_runtime_tiles(bench, tmp_path):
    from cellvit_trt.runtime.sources import open_source

    slide = bench.write_slide(tmp_path, 3, 256, seed=3)
    reader = bench.UpstreamTileReader(slide, 256)
    assert (reader.rows, reader.cols) == (3, 3)
    with open_source(slide, target_mpp=0.25, tile_size=256, overlap=32) as src:
        assert (src.grid.rows, src.grid.cols) == (3, 3)
        for r, c in reader.coords():
            ours = src.read_tile(r, c).image
            theirs = reader.read(r, c)
            assert theirs.shape == (256, 256, 3)
            np.testing.assert_array_equal(theirs, ours, err_msg=f"tile {r},{c}")
    reader.close()


def test_pad_tile_pads_top_left_only_on_the_first_row_and_column(bench):
    patch = np.zeros((200, 220, 3), np.uint8)
    first = bench.pad_tile(patch, 256, col=0, row=0)
    assert (first[:56] == 255).all() and (first[:, :36] == 255).all() and (first[56:, 36:] == 0).all()
    later = bench.pad_tile(patch, 256, col=2, row=1)
    assert (later[:200, :220] == 0).all() and (later[200:] == 255).all() and (later[:, 220:] == 255).all()


def test_upstream_style_forward_equals_the_model(bench):
    import torch

    from cellvit_trt.models import build_model

    torch.manual_seed(0)
    model = build_model("tiny").eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        ref = model(x, retrieve_tokens=True)
        got = bench.UpstreamStyleForward(model)(x, retrieve_tokens=True)
    assert set(got) == set(ref)
    for key in ref:
        torch.testing.assert_close(got[key], ref[key], rtol=0, atol=0, msg=key)


def test_agreement_scores(bench):
    rng = np.random.default_rng(0)
    gy, gx = np.mgrid[0:1000:50, 0:750:50]  # 20 x 15 cells, 50 px apart
    xy = np.stack([gx.ravel(), gy.ravel()], 1).astype(np.float64)
    ty = rng.integers(1, 6, len(xy))
    same = bench.agreement(xy, ty, xy.copy(), ty.copy())
    assert same["f1"] == 1.0 and same["type_agreement"] == 1.0 and same["exact_fraction"] == 1.0
    assert bench.agreement(xy, ty, xy + 8.0, ty)["f1"] == 1.0  # 11.3 px away: inside the 12 px radius
    assert bench.agreement(xy, ty, xy + 9.0, ty)["matched"] == 0  # 12.7 px: outside
    fewer = bench.agreement(xy, ty, xy[:200], 6 - ty[:200])
    assert fewer["f1"] == pytest.approx(2 * 200 / 500)
    assert fewer["type_agreement"] == pytest.approx(np.mean(ty[:200] == 6 - ty[:200]))
    assert bench.agreement(xy, ty, np.zeros((0, 2)), np.zeros(0))["f1"] == 0.0
