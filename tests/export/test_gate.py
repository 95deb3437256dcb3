"""The parity gate on maps with known cells: synthetic ground-truth targets as the reference, a candidate that
is identical / slightly perturbed / missing cells. Tests the per-output and cell-level metrics and the
verdicts, independent of any model."""

from __future__ import annotations

import numpy as np
import pytest

from cellvit_trt.export.gate import load_thresholds, run_gate


@pytest.fixture(scope="module")
def truth():
    """Reference output dict (24 tiles of 256 px, about 1000 nuclei) made from exact synthetic ground truth:
    enough cells for the fp32 gate's 95 % interval of cell_type_agreement to clear 0.995."""
    from cellvit_trt.synthetic.render import render_window
    from cellvit_trt.synthetic.targets import make_targets
    from cellvit_trt.synthetic.world import World

    world = World(seed=21)
    fg, hv, tm, images = [], [], [], []
    n = 24
    for i in range(n):
        w = render_window(world, (i // 6) * 800, (i % 6) * 800, 256, 256)
        inst = (w.label + 1).astype(np.int32)
        types = np.concatenate([[0], w.nuclei.type]).astype(np.int64)
        t = make_targets(inst, types)
        fg.append(t.binary)
        hv.append(t.hv)
        tm.append(t.type_map)
        images.append(w.image)
    ref = {
        "fg": np.stack(fg),
        "hv": np.stack(hv).astype(np.float32),
        "type_map": np.stack(tm),
        "tissue_logits": np.tile(np.linspace(-1, 1, 19, dtype=np.float32), (n, 1)),
    }
    return ref, np.stack(images)


class Fixed:
    """A runner returning precomputed maps (stands for an engine/graph in this metric test)."""

    def __init__(self, out):
        self.out = out
        self.calls = 0

    def infer(self, images):
        n = len(images)
        lo = self.calls
        self.calls += n
        return {k: v[lo : lo + n] for k, v in self.out.items()}


def test_identical_maps_pass_with_perfect_scores(truth):
    ref, images = truth
    report = run_gate(
        None, Fixed(ref), images, "fp32", reference_outputs=ref, class_names=[str(i) for i in range(6)]
    )
    assert report.passed, report.format()
    m = report.metrics
    assert m["fg_agreement"] == 1 and m["type_agreement"] == 1 and m["hv_max_abs"] == 0
    assert m["bpq"] == pytest.approx(1.0) and m["f1"] == pytest.approx(1.0)
    assert report.cells["n_reference"] > 20


def test_fp16_like_noise_passes_fp16_but_not_fp32(truth):
    ref, images = truth
    cand = dict(ref)
    rng = np.random.default_rng(0)
    cand["hv"] = (ref["hv"] + rng.normal(0, 0.002, ref["hv"].shape)).astype(np.float16)
    loose = run_gate(None, Fixed(cand), images, "fp16", reference_outputs=ref)
    assert loose.passed, loose.format()
    strict = run_gate(None, Fixed(cand), images, "fp32", reference_outputs=ref)
    assert not strict.passed and any(f.startswith("hv_") for f in strict.failures)


def test_missing_cells_fail_at_cell_level(truth):
    from scipy import ndimage as ndi

    ref, images = truth
    cand = {k: v.copy() for k, v in ref.items()}
    for i in range(len(cand["fg"])):
        lab, n = ndi.label(cand["fg"][i])
        drop = np.isin(lab, np.arange(1, n + 1, 3))  # every third blob vanishes
        cand["fg"][i][drop] = 0
        cand["type_map"][i][drop] = 0
    report = run_gate(None, Fixed(cand), images, "int8", reference_outputs=ref)
    assert not report.passed
    assert report.metrics["f1"] < 0.95 and report.metrics["bpq"] < 0.95, report.format()
    text = report.format()
    assert "FAILED" in text and "FAIL " in text
    with pytest.raises(Exception, match="parity gate"):
        report.raise_if_failed("test candidate")


def test_thresholds_are_ordered_by_precision():
    t = {p: load_thresholds(p) for p in ("fp32", "fp16", "int8")}
    for name in t["int8"].min:
        assert t["fp32"].min[name] >= t["fp16"].min[name] >= t["int8"].min[name], name
    for name in t["int8"].max:
        assert t["fp32"].max[name] <= t["fp16"].max[name] <= t["int8"].max[name], name
