"""Upstream CellViT losses: values at the known extremes and against literal formulas."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
import torch.nn.functional as F  # noqa: E402

from cellvit_trt.training.losses import (  # noqa: E402
    LossWeights,
    cellvit_loss,
    dice_loss,
    msge_loss_maps,
    xentropy_loss,
)


def _onehot(labels, n):
    return F.one_hot(labels, n).permute(0, 3, 1, 2).float()


def test_xentropy_matches_cross_entropy_of_probabilities():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 3, 8, 8, generator=g)
    target = torch.randint(0, 3, (2, 8, 8), generator=g)
    got = xentropy_loss(torch.softmax(logits, 1), _onehot(target, 3))
    torch.testing.assert_close(got, F.cross_entropy(logits, target), rtol=1e-5, atol=1e-6)


def test_dice_is_zero_when_perfect_and_sums_over_classes():
    target = torch.randint(0, 3, (2, 8, 8), generator=torch.Generator().manual_seed(1))
    onehot = _onehot(target, 3)
    assert float(dice_loss(onehot, onehot)) == pytest.approx(0.0, abs=1e-5)
    wrong = torch.roll(onehot, 1, dims=1)  # every pixel in the wrong class
    assert float(dice_loss(wrong, onehot)) == pytest.approx(3.0, abs=1e-3)


def test_msge_measures_gradients_on_nuclei_only():
    hv = torch.zeros(1, 2, 16, 16)
    hv[0, 0] = torch.linspace(-1, 1, 16)[None, :]  # horizontal map grows along x
    focus = torch.zeros(1, 16, 16, dtype=torch.long)
    focus[0, 4:12, 4:12] = 1
    assert float(msge_loss_maps(hv, hv, focus)) == 0.0
    flat = torch.zeros_like(hv)
    assert float(msge_loss_maps(flat, hv, focus)) > 0.0
    # differences outside the focus region do not count
    off = hv.clone()
    off[..., :2, :] += 5.0
    assert float(msge_loss_maps(off, hv, focus)) == 0.0
    # upstream's kernel orientation differentiates the horizontal map along y: blind to this x-ramp
    assert float(msge_loss_maps(flat, hv, focus, upstream_orientation=True)) == pytest.approx(0.0, abs=1e-6)


def test_total_loss_has_every_upstream_part_and_tissue_weight_zero_drops_it():
    g = torch.Generator().manual_seed(2)
    out = {
        "nuclei_binary_map": torch.randn(2, 2, 16, 16, generator=g),
        "hv_map": torch.randn(2, 2, 16, 16, generator=g),
        "nuclei_type_map": torch.randn(2, 6, 16, 16, generator=g),
        "tissue_types": torch.randn(2, 4, generator=g),
    }
    binary = torch.randint(0, 2, (2, 16, 16), generator=g)
    types = binary * torch.randint(1, 6, (2, 16, 16), generator=g)
    hv = torch.rand(2, 2, 16, 16, generator=g) * binary[:, None]
    tissue = torch.tensor([0, 3])
    total, parts = cellvit_loss(out, binary, hv, types, tissue, 6)
    assert set(parts) == {
        "binary_xentropy",
        "binary_dice",
        "hv_mse",
        "hv_msge",
        "type_xentropy",
        "type_dice",
        "tissue_ce",
    }
    assert float(total) == pytest.approx(sum(parts.values()), rel=1e-5)
    total0, parts0 = cellvit_loss(out, binary, hv, types, tissue, 6, LossWeights(tissue_ce=0.0))
    assert "tissue_ce" not in parts0 and float(total0) < float(total)
