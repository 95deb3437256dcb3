"""FLOPs saved by computing the shared skip decoders once, counted on the meta device against the oracle."""

from __future__ import annotations

import pytest
import torch

from cellvit_trt.models import build_model
from cellvit_trt.models.flops import count_flops, flop_report
from upstream_oracle import upstream_model

pytestmark = pytest.mark.oracle


@pytest.mark.parametrize(("variant", "saved_tflop"), [("CellViT256", 0.63), ("SAM-H", 1.24)])
def test_saved_flops_match_upstream(upstream, variant, saved_tflop):
    with torch.device("meta"):
        ours = build_model(variant)
    rep = flop_report(ours, 1024)
    upstream_total = count_flops(
        upstream_model(variant, device="meta"), torch.empty(1, 3, 1024, 1024, device="meta")
    )
    print(
        f"\n{variant} 1024²: upstream {upstream_total / 1e12:.4f} TFLOP, ours {rep.ours / 1e12:.4f}, "
        f"saved {rep.saved / 1e12:.4f}"
    )
    assert rep.upstream_style == upstream_total  # ours + 2 x skip decoders is exactly upstream's count
    assert rep.saved / 1e12 == pytest.approx(saved_tflop, abs=0.01)
    assert rep.ours < upstream_total
