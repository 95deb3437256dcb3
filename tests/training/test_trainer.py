"""Trainer smoke test (real model, real synthetic data) and the shipped demo checkpoint."""

from __future__ import annotations

import contextlib

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from cellvit_trt.data import demo_checkpoint_path  # noqa: E402
from cellvit_trt.models import load_checkpoint  # noqa: E402
from cellvit_trt.synthetic.world import TISSUE_NAMES  # noqa: E402
from cellvit_trt.training.data import make_batch  # noqa: E402
from cellvit_trt.training.losses import cellvit_loss  # noqa: E402
from cellvit_trt.training.trainer import TrainSettings, to_tensors, train  # noqa: E402


@contextlib.contextmanager
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


def test_loss_decreases_on_a_fixed_batch():
    from cellvit_trt.models import build_model

    with _one_thread():
        torch.manual_seed(0)
        model = build_model("tiny", num_tissue_classes=len(TISSUE_NAMES))
        model.train()
        x, binary, hv, types, tissue = to_tensors(make_batch([123], 64))
        opt = torch.optim.AdamW(model.parameters(), lr=2e-3)
        losses = []
        for _ in range(3):
            loss, _ = cellvit_loss(model(x), binary, hv, types, tissue, 6)
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
        assert losses[-1] < losses[0]


def test_train_writes_a_checkpoint_that_loads_strictly(tmp_path):
    out = tmp_path / "t.pth"
    s = TrainSettings(
        out=out,
        steps=2,
        crop_tiles=1,
        crops_per_side=2,
        fine_steps=1,
        fine_tiles=1,
        tile_size=64,
        warmup_steps=1,
        threads=1,
        log_every=1,
    )
    summary = train(s)
    assert summary["steps_done"] == 3 and out.is_file()
    model, info = load_checkpoint(out)
    assert info.variant == "tiny" and info.arch == "CellViTCustom"
    assert info.tissue_names == TISSUE_NAMES and info.nuclei_names[1] == "Neoplastic"
    assert info.magnification == 40 and info.mean == (0.5, 0.5, 0.5) and info.std == (0.5, 0.5, 0.5)
    assert info.config["training"]["synthetic"] is True
    x = torch.zeros(1, 3, 64, 64)
    with torch.inference_mode():
        assert model(x)["tissue_types"].shape == (1, len(TISSUE_NAMES))


def test_bad_settings_are_refused(tmp_path):
    from cellvit_trt.errors import ConfigError

    with pytest.raises(ConfigError, match="tile_size"):
        train(TrainSettings(out=tmp_path / "x.pth", tile_size=200))
    with pytest.raises(ConfigError, match="steps"):
        train(TrainSettings(out=tmp_path / "x.pth", steps=0, fine_steps=0))


def test_demo_checkpoint_loads_strictly_and_segments_held_out_tiles():
    from cellvit_trt.training.evaluate import evaluate_model

    path = demo_checkpoint_path()
    assert path.stat().st_size < 8 * 2**20
    model, info = load_checkpoint(path)  # strict: every key and shape must match
    assert info.variant == "tiny" and info.magnification == 40 and info.tissue_names == TISSUE_NAMES
    assert all(v.dtype == torch.float32 for v in model.state_dict().values() if v.is_floating_point())
    with _one_thread():
        report = evaluate_model(model, n_tiles=3, tile_size=256)
    d = report["dataset"]
    # looser than the documented figures (docs/synthetic.md) because three tiles are noisy
    assert d["bPQ"] >= 0.65 and d["f1"] >= 0.75, d
    assert np.isfinite(d["mPQ"]) and d["mPQ"] >= 0.35, d
