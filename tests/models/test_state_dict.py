"""State-dict keys (in order), shapes and dtypes equal upstream for every variant (meta device)."""

from __future__ import annotations

import pytest
import torch

from cellvit_trt.models import build_model
from upstream_oracle import upstream_model

# parameter counts (6 nuclei, 19 tissue classes) from the reference key dumps
PARAMS_M = {"CellViT256": 46.75, "SAM-B": 146.1, "SAM-L": 367.8, "SAM-H": 699.7}


@pytest.mark.oracle
@pytest.mark.parametrize("variant", ["CellViT256", "SAM-B", "SAM-L", "SAM-H"])
@pytest.mark.parametrize("regression", [False, True])
def test_state_dict_equals_upstream(upstream, variant, regression):
    up = upstream_model(variant, regression_loss=regression, device="meta").state_dict()
    with torch.device("meta"):
        ours = build_model(variant, regression_loss=regression).state_dict()
    assert list(ours) == list(up)
    bad = [
        (k, tuple(ours[k].shape), tuple(v.shape))
        for k, v in up.items()
        if ours[k].shape != v.shape or ours[k].dtype != v.dtype
    ]
    assert not bad
    params = sum(v.numel() for k, v in ours.items() if "running_" not in k and "num_batches" not in k)
    assert params / 1e6 == pytest.approx(PARAMS_M[variant], abs=0.06)
    binary = ours["nuclei_binary_map_decoder.decoder0_header.2.weight"]
    assert binary.shape[0] == (4 if regression else 2)


def test_key_facts_from_reference():
    with torch.device("meta"):
        vit = build_model("CellViT256").state_dict()
        sam = build_model("SAM-H").state_dict()
    assert len(vit) == 439 and len(sam) == 746
    assert vit["encoder.pos_embed"].shape == (1, 197, 384)
    assert vit["decoder3.0.block.0.weight"].shape == (384, 312, 2, 2)
    assert vit["nuclei_type_maps_decoder.decoder3_upsampler.0.block.0.weight"].shape == (312, 624, 3, 3)
    assert vit["encoder.head.weight"].shape == (19, 384)
    assert sam["encoder.pos_embed"].shape == (1, 64, 64, 1280)
    assert sam["encoder.blocks.0.attn.rel_pos_h"].shape == (27, 80)  # windowed block
    assert sam["encoder.blocks.7.attn.rel_pos_h"].shape == (127, 80)  # global block
    assert sam["decoder1.0.block.0.weight"].shape == (1280, 512, 2, 2)
    assert sam["classifier_head.weight"].shape == (19, 256)
    assert "encoder.head.weight" not in sam and "classifier_head.weight" not in vit
