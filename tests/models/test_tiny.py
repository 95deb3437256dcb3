"""The tiny variant and the model API: shapes, sizes, input checks, variant specs, trainability."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from cellvit_trt.errors import ConfigError, InputError
from cellvit_trt.models import VARIANTS, CellViTSpec, DecoderDims, EncoderSpec, build_model, variant_spec


@pytest.fixture(scope="module")
def tiny():
    torch.set_num_threads(2)
    torch.manual_seed(0)
    return build_model("tiny").eval()


def test_variants_registered():
    assert VARIANTS == ("CellViT256", "SAM-B", "SAM-L", "SAM-H", "tiny")
    assert variant_spec("sam-h").name == "SAM-H"  # case-insensitive, as upstream's .upper()
    with pytest.raises(ConfigError, match="unknown 'SAM-XL'.*CellViT256, SAM-B"):
        build_model("SAM-XL")


def test_decoder_rule_matches_upstream():
    assert variant_spec("CellViT256").decoder == DecoderDims(256, 128, 312)
    for v in ("SAM-B", "SAM-L", "SAM-H"):
        assert variant_spec(v).decoder == DecoderDims(512, 256, 512)
    assert (
        DecoderDims.upstream(511) == DecoderDims(256, 128, 312)
        and DecoderDims.upstream(512).bottleneck_dim == 512
    )


def test_tiny_size(tiny):
    params = sum(p.numel() for p in tiny.parameters())
    assert 0.5e6 < params < 1.2e6  # ~3.8 MB checkpoint


@pytest.mark.parametrize("shape", [(2, 256, 256), (1, 512, 512), (1, 256, 384)])
def test_tiny_forward_shapes(tiny, shape):
    b, h, w = shape
    with torch.no_grad():
        out = tiny(torch.randn(b, 3, h, w), retrieve_tokens=True)
    assert list(out) == ["tissue_types", "nuclei_binary_map", "hv_map", "nuclei_type_map", "tokens"]
    assert out["tissue_types"].shape == (b, 19)
    assert out["nuclei_binary_map"].shape == out["hv_map"].shape == (b, 2, h, w)
    assert out["nuclei_type_map"].shape == (b, 6, h, w)
    assert out["tokens"].shape == (b, 96, h // 16, w // 16)


def test_regression_variant_outputs():
    model = build_model("tiny", num_nuclei_classes=3, num_tissue_classes=0, regression_loss=True).eval()
    with torch.no_grad():
        out = model(torch.randn(1, 3, 64, 64))
    assert list(out) == ["tissue_types", "nuclei_binary_map", "regression_map", "hv_map", "nuclei_type_map"]
    assert out["regression_map"].shape == (1, 2, 64, 64) and out["nuclei_type_map"].shape == (1, 3, 64, 64)
    assert out["tissue_types"].shape == (
        1,
        96,
    )  # no tissue head: the normed CLS token, as upstream's Identity


@pytest.mark.parametrize("shape", [(1, 3, 250, 256), (1, 1, 256, 256), (3, 256, 256)])
def test_bad_input_shape(tiny, shape):
    with pytest.raises(InputError, match=r"expected \(B, 3, H, W\) with H, W multiples of 16"):
        tiny(torch.randn(*shape))


def test_sam_rejects_tiles_beyond_its_pos_embed():
    spec = CellViTSpec("s", EncoderSpec("sam", 32, 4, 2, (1, 2, 3, 4), img_size=64, window_size=2))
    model = build_model(spec).eval()
    with pytest.raises(InputError, match="exceeds the 64² pos-embed"):
        model(torch.randn(1, 3, 80, 80))


@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [
        ({"embed_dim": 100, "num_heads": 3}, "not divisible"),
        ({"extract_layers": (1, 2, 3)}, "4 increasing block indices"),
        ({"extract_layers": (1, 2, 2, 4)}, "4 increasing block indices"),
        ({"extract_layers": (1, 2, 3, 9)}, "in 1..4"),
        ({"kind": "uni"}, "'vit256' or 'sam'"),
        ({"img_size": 250}, "multiple of 16"),
    ],
)
def test_encoder_spec_validation(kwargs, pattern):
    base = dict(kind="vit256", embed_dim=96, depth=4, num_heads=3, extract_layers=(1, 2, 3, 4))
    with pytest.raises(ConfigError, match=pattern):
        EncoderSpec(**{**base, **kwargs})


def test_tiny_trains():
    torch.manual_seed(0)
    model = build_model("tiny", drop_rate=0.1, attn_drop_rate=0.1, drop_path_rate=0.1).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    x = torch.randn(2, 3, 64, 64)
    target = (x[:, :1] > 0).long().squeeze(1)
    losses = []
    for _ in range(3):
        out = model(x)
        loss = (
            torch.nn.functional.cross_entropy(out["nuclei_binary_map"], target)
            + out["hv_map"].pow(2).mean()
            + out["nuclei_type_map"].pow(2).mean()
            + out["tissue_types"].pow(2).mean()
        )
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert all(p.grad is not None for p in model.parameters())
    assert losses[-1] < losses[0]


def test_import_cellvit_trt_does_not_import_torch():
    code = "import sys, cellvit_trt; sys.exit(1 if 'torch' in sys.modules else 0)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
