"""The gate's verdict rests on confidence intervals over tiles, and its sample is sized from the statistics.

The failure this guards: an INT8 export gate passed on 4 tiles (cell_type_agreement 0.930, over 0.85) while
`validate` on 16 tiles measured 0.838. Four tiles that disagree among themselves say little; the gate must
fail when the interval's lower bound is under the threshold, and use enough tiles by default.
"""

from __future__ import annotations

import numpy as np
import pytest

from cellvit_trt.export.gate import load_thresholds, run_gate
from cellvit_trt.export.samples import cells_needed, sized_gate_tiles
from cellvit_trt.metrics.intervals import figure_intervals, wilson
from cellvit_trt.synthetic.tile import generate_tile


def test_wilson_interval_matches_the_textbook_values():
    lo, hi = wilson(93, 100)
    assert lo == pytest.approx(0.8626, abs=1e-3) and hi == pytest.approx(0.9657, abs=1e-3)
    lo, hi = wilson(0, 10)
    assert lo == pytest.approx(0.0, abs=1e-12) and hi == pytest.approx(0.2775, abs=1e-3)


def _columns(agree: list[int], tp: int = 50) -> dict[str, np.ndarray]:
    n = len(agree)
    return {
        "tp": np.full(n, tp, float),
        "fp": np.zeros(n),
        "fn": np.zeros(n),
        "agree": np.asarray(agree, float),
        "bpq": np.full(n, 0.95),
        "mpq": np.full(n, 0.9),
    }


def test_four_uneven_tiles_no_longer_pass_int8_on_their_mean():
    cols = _columns([50, 50, 48, 38])  # 186/200 = 0.93, but one tile at 0.76
    t = load_thresholds("int8")
    metrics = {"cell_type_agreement": 0.93, "bpq": 0.95, "f1": 1.0}
    assert t.check(metrics) == ([], []), "the old rule (point value) passes it"
    failures, _ = t.check(metrics, figure_intervals(cols))
    assert any(f.startswith("cell_type_agreement") and "lower 95% bound" in f for f in failures), failures


def test_sixteen_even_tiles_at_the_same_mean_pass():
    cols = _columns([47, 46, 47, 46] * 4)  # 0.93 on every tile
    iv = figure_intervals(cols)["cell_type_agreement"]
    assert 0.85 < iv.low < 0.93 < iv.high
    metrics = {"cell_type_agreement": 0.93, "bpq": 0.95, "f1": 1.0}
    assert load_thresholds("int8").check(metrics, figure_intervals(cols))[0] == []


def test_a_perfect_score_on_few_cells_is_not_certainty():
    """Tiles that all agree bootstrap to [1, 1]; Wilson on their 80 cells keeps the lower bound honest."""
    iv = figure_intervals(_columns([40, 40], tp=40))["cell_type_agreement"]
    assert iv.low < 0.96 and iv.high == 1.0
    failures, _ = load_thresholds("fp32").check({"cell_type_agreement": 1.0}, {"cell_type_agreement": iv})
    assert failures and "lower 95% bound" in failures[0]


def test_run_gate_reports_intervals_and_fails_an_uneven_int8_candidate():
    """Real maps: synthetic truth as the reference; the candidate relabels cells unevenly across 4 tiles."""
    ref = {"fg": [], "hv": [], "type_map": [], "tissue_logits": []}
    cand_types, images = [], []
    for i, share in enumerate((0.0, 0.0, 0.05, 0.3)):
        tile = generate_tile(256, seed=40 + i, glass_fraction=0.0)
        t = tile.targets()
        ref["fg"].append(t.binary)
        ref["hv"].append(t.hv)
        ref["type_map"].append(t.type_map)
        ref["tissue_logits"].append(np.linspace(-1, 1, 19, dtype=np.float32))
        ids = np.unique(t.inst_map[t.inst_map > 0])
        flip = np.isin(t.inst_map, ids[: int(round(share * len(ids)))])
        tm = t.type_map.copy()
        tm[flip] = np.where(tm[flip] == 1, 2, 1)
        cand_types.append(tm)
        images.append(tile.image)
    ref = {k: np.stack(v) for k, v in ref.items()}
    cand = {**ref, "type_map": np.stack(cand_types)}
    report = run_gate(
        None,
        lambda x: {k: v[: len(x)] for k, v in cand.items()},
        np.stack(images),
        "int8",
        reference_outputs=ref,
        batch=4,
    )
    m = report.metrics["cell_type_agreement"]
    assert 0.85 < m < 0.97, report.format()  # the point value alone would pass
    assert not report.passed and "lower 95% bound" in report.format()
    d = report.to_dict()
    assert d["intervals"]["cell_type_agreement"]["low"] < 0.85 < d["intervals"]["cell_type_agreement"]["high"]
    assert any("below the 16 recommended" in n for n in report.notes)
    assert "bootstrap over 4 tiles" in d["intervals"]["cell_type_agreement"]["method"]


def test_the_default_gate_sample_is_sized_from_the_thresholds():
    int8, _ = sized_gate_tiles(load_thresholds("int8"), 256)
    assert len(int8) >= load_thresholds("int8").recommended_tiles == 16
    fp32 = load_thresholds("fp32")
    # a perfect score over n cells clears 0.995 only from n = 0.995 z^2 / 0.005
    assert cells_needed(fp32) == 765 and cells_needed(load_thresholds("fp16")) == 189
