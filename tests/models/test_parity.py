"""Outputs of cellvit_trt's CellViT equal upstream cellvit==1.0.9 (random weights, strict state-dict transfer).

Run with `-s` to see the parity figures (max |ours - upstream| per output).
"""

from __future__ import annotations

import pytest
import torch

from cellvit_trt.models import build_model
from cellvit_trt.models.oracle import max_abs_diff, randomize_, upstream_model

TOL = 1e-5  # FP32; measured: 0.0 everywhere (same ops in the same order)


@pytest.fixture(scope="module")
def pairs(upstream):
    torch.set_num_threads(2)
    cache: dict[tuple[str, bool], tuple[torch.nn.Module, torch.nn.Module]] = {}

    def get(variant: str, regression: bool = False):
        if (variant, regression) not in cache:
            up = randomize_(upstream_model(variant, regression_loss=regression), seed=len(cache) + 1)
            ours = build_model(variant, regression_loss=regression)
            ours.load_state_dict(up.state_dict(), strict=True)
            cache[(variant, regression)] = (up, ours.eval())
        return cache[(variant, regression)]

    return get


CASES = [
    # variant, (B, H, W), regression_loss, retrieve_tokens
    ("CellViT256", (1, 256, 256), False, True),
    ("CellViT256", (1, 1024, 1024), False, False),  # the WSI tile size; the slowest case
    ("CellViT256", (2, 128, 192), False, True),  # batch + non-square: upstream's w/h naming swap is harmless
    ("CellViT256", (1, 256, 256), True, True),
    ("SAM-B", (1, 256, 256), False, True),  # global rel-pos 127 -> 31, pos-embed crop
    ("SAM-B", (1, 512, 512), False, False),
    ("SAM-B", (2, 128, 128), False, True),  # 8x8 grid: windows padded 8 -> 14
    ("SAM-B", (1, 256, 256), True, True),
]


@pytest.mark.parametrize(("variant", "shape", "regression", "tokens"), CASES,
                         ids=[f"{v}-{s[1]}x{s[2]}{'-reg' if r else ''}{'-tok' if t else ''}" for v, s, r, t in CASES])
def test_forward_matches_upstream(pairs, variant, shape, regression, tokens):
    up, ours = pairs(variant, regression)
    x = torch.randn(*shape[:1], 3, *shape[1:], generator=torch.Generator().manual_seed(sum(shape)))
    with torch.no_grad():
        expected = up(x, retrieve_tokens=tokens)
        got = ours(x, retrieve_tokens=tokens)
    diffs = max_abs_diff(expected, got)  # also checks keys (and their order) and shapes
    print(f"\nparity {variant} {shape} regression={regression} tokens={tokens}: "
          + ", ".join(f"{k} {v:.2e}" for k, v in diffs.items()))
    assert set(got) >= {"tissue_types", "nuclei_binary_map", "hv_map", "nuclei_type_map"}
    assert ("regression_map" in got) == regression and ("tokens" in got) == tokens
    assert got["nuclei_binary_map"].shape == (shape[0], 2, *shape[1:])
    assert all(torch.isfinite(v).all() for v in got.values())
    assert max(diffs.values()) <= TOL, diffs
