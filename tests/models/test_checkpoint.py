"""Official-format checkpoints: upstream-written files load into ours with identical outputs; ours round-trip
and load into upstream; every malformed file gives a CheckpointError that names the file and the problem."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from cellvit_trt.errors import CheckpointError, ConfigError
from cellvit_trt.models import (
    CellViTSpec,
    DecoderDims,
    EncoderSpec,
    build_model,
    load_checkpoint,
    make_info,
    save_checkpoint,
)
from cellvit_trt.models.flat_config import flatten, unflatten
from upstream_oracle import max_abs_diff, randomize_, randomized_pair, upstream_model

NUCLEI_TYPES = {
    "Background": 0,
    "Neoplastic": 1,
    "Inflammatory": 2,
    "Connective": 3,
    "Dead": 4,
    "Epithelial": 5,
}


def upstream_config(**data) -> dict:
    """A nested config shaped like the paper runs (TIO-IKIM/CellViT configs/PanNuke/...)."""
    return {
        "logging": {"mode": "online", "tags": ["Fold-1", "ViT256"], "log_dir": "./results"},
        "random_seed": 19,
        "data": {
            "dataset": "pannuke",
            "train_folds": [0],
            "num_nuclei_classes": 6,
            "num_tissue_classes": 19,
            **data,
        },
        "model": {
            "backbone": "ViT256",
            "pretrained_encoder": "./vit256_small_dino.pth",
            "shared_skip_connections": True,
        },
        "training": {
            "drop_rate": 0,
            "attn_drop_rate": 0.1,
            "mixed_precision": True,
            "optimizer_hyperparameter": {"betas": [0.85, 0.95], "lr": 0.0003},
        },
        "transformations": {"normalize": {"mean": [0.5, 0.4, 0.3], "std": [0.2, 0.25, 0.3]}},
        "dataset_config": {"nuclei_types": NUCLEI_TYPES, "tissue_types": {f"T{i}": i for i in range(19)}},
    }


def save_like_upstream(path: Path, model: torch.nn.Module, config: dict, **overrides) -> Path:
    """What TIO-IKIM/CellViT base_ml/base_trainer.py::save_checkpoint writes (numpy best_metric included)."""
    state = {
        "arch": type(model).__name__,
        "epoch": 129,
        "model_state_dict": model.state_dict(),
        "optimizer_state_dict": {"state": {}, "param_groups": [{"lr": 3e-4, "params": [0, 1]}]},
        "scheduler_state_dict": {"gamma": 0.85, "last_epoch": 129},
        "best_metric": np.float64(0.7421),
        "best_epoch": np.int64(97),
        "config": flatten(config),
        "wandb_id": "abc123",
        "logdir": "/results/2023-06-01T120000_CellViT-256",
        "run_name": "2023-06-01T120000_CellViT-256",
        "scaler_state_dict": {"scale": 65536.0, "growth_factor": 2.0},
    }
    state.update(overrides)
    torch.save(state, path)
    return path


@pytest.fixture(scope="module")
def upstream_vit(upstream):
    torch.set_num_threads(2)
    return randomized_pair("CellViT256", seed=7)[0]


@pytest.mark.oracle
def test_upstream_checkpoint_loads_with_identical_outputs(upstream_vit, tmp_path):
    path = save_like_upstream(
        tmp_path / "CellViT-256-x40-AMP.pth", upstream_vit, upstream_config(magnification=20)
    )
    model, info = load_checkpoint(path)
    assert not model.training and all(p.device.type == "cpu" for p in model.state_dict().values())
    x = torch.randn(1, 3, 128, 128, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        diffs = max_abs_diff(upstream_vit(x, retrieve_tokens=True), model(x, retrieve_tokens=True))
    print(f"\nupstream-format checkpoint CellViT256 128x128: {diffs}")
    assert max(diffs.values()) <= 1e-5
    assert (info.arch, info.variant, info.num_nuclei_classes, info.num_tissue_classes) == (
        "CellViT256",
        "CellViT256",
        6,
        19,
    )
    assert info.nuclei_names == tuple(NUCLEI_TYPES)
    assert info.nuclei_colors[1] == (255, 0, 0) and info.nuclei_colors[5] == (255, 159, 68)
    assert info.tissue_names[3] == "T3"
    assert info.magnification == 20  # config wins over the file name
    assert info.mean == (0.5, 0.4, 0.3) and info.std == (0.2, 0.25, 0.3)
    assert info.mixed_precision is True and info.regression_loss is False
    assert info.sha256 is not None and len(info.sha256) == 64
    assert info.config["training"]["optimizer_hyperparameter"]["betas"] == [0.85, 0.95]


@pytest.mark.oracle
def test_our_checkpoint_loads_into_upstream(upstream_vit, tmp_path):
    with torch.device("meta"):
        ours = build_model("CellViT256")
    ours.load_state_dict(upstream_vit.state_dict(), assign=True)
    path = tmp_path / "ours.pth"
    save_checkpoint(path, ours, epoch=3)
    ck = torch.load(path, weights_only=True)
    assert ck["arch"] == "CellViT256" and ck["epoch"] == 3 and ck["config"]["model.backbone"] == "ViT256"
    fresh = upstream_model("CellViT256", device="meta")
    fresh.load_state_dict(ck["model_state_dict"], strict=True, assign=True)
    for k, v in upstream_vit.state_dict().items():
        assert torch.equal(fresh.state_dict()[k], v), k


def test_magnification_from_file_name_and_defaults(tmp_path):
    model = build_model("tiny")
    conf = upstream_config()
    conf["model"] = {"backbone": "tiny"}
    del conf["transformations"]
    del conf["dataset_config"]
    for name, expected in (("CellViT-tiny-x20.pth", 20), ("tiny-X40-AMP.pth", 40), ("tiny.pth", 40)):
        p = tmp_path / name
        torch.save(
            {"arch": "CellViTCustom", "config": flatten(conf), "model_state_dict": model.state_dict()}, p
        )
        _, info = load_checkpoint(p, compute_sha256=False)
        assert info.magnification == expected, name
        assert info.mean == (0.5, 0.5, 0.5) and info.nuclei_names[1] == "Neoplastic" and info.sha256 is None
        assert info.tissue_names[0] == "Adrenal_gland"


@pytest.mark.parametrize(
    "spec",
    [
        "tiny",
        CellViTSpec(
            "sam-mini",
            EncoderSpec(
                "sam",
                64,
                4,
                2,
                (1, 2, 3, 4),
                img_size=256,
                global_attn_indexes=(1, 3),
                window_size=6,
                out_chans=32,
            ),
            DecoderDims(32, 16, 24, (8, 16, 24), 8),
            num_nuclei_classes=4,
            num_tissue_classes=3,
            regression_loss=True,
        ),
    ],
    ids=["tiny", "custom-sam"],
)
def test_round_trip(spec, tmp_path):
    torch.manual_seed(0)
    model = randomize_(build_model(spec), seed=11).eval()
    names = tuple(f"n{i}" for i in range(model.num_nuclei_classes))
    info = make_info(model.spec, nuclei_names=names, magnification=20)
    path = tmp_path / "sub" / "model.pth"
    sha = save_checkpoint(path, model, info, epoch=5, best_metric=0.5)
    assert sorted(os.listdir(path.parent)) == ["model.pth"]  # no temp files left
    loaded, info2 = load_checkpoint(path)
    assert info2.sha256 == sha and info2.spec == model.spec and info2.arch == "CellViTCustom"
    assert info2.nuclei_names == names and info2.magnification == 20
    assert torch.load(path, weights_only=True)["epoch"] == 5
    x = torch.randn(
        2, 3, 224, 224, generator=torch.Generator().manual_seed(1)
    )  # below the 256 pos-embed grid
    with torch.no_grad():
        assert (
            max(max_abs_diff(model(x, retrieve_tokens=True), loaded(x, retrieve_tokens=True)).values()) == 0.0
        )


def test_tiny_checkpoint_is_small(tmp_path):
    path = tmp_path / "tiny.pth"
    save_checkpoint(path, build_model("tiny"))
    assert path.stat().st_size < 5 * 2**20


def test_save_failure_leaves_nothing(tmp_path):
    path = tmp_path / "m.pth"
    with pytest.raises((AttributeError, TypeError, pickle.PicklingError)):
        save_checkpoint(path, build_model("tiny"), hook=lambda: None)  # a lambda cannot be pickled
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ConfigError, match="arch"):
        save_checkpoint(path, build_model("tiny"), arch="CellViT256")
    with pytest.raises(ConfigError, match="info describes"):
        save_checkpoint(path, build_model("tiny"), make_info(build_model("tiny", num_nuclei_classes=3).spec))


class Foreign:
    """Not plain data: weights_only loading must refuse it."""


def _tiny_ck(**overrides) -> dict:
    model = build_model("tiny")
    ck = {
        "arch": "CellViTCustom",
        "config": flatten({"model": {"backbone": "tiny"}}),
        "model_state_dict": model.state_dict(),
    }
    ck.update(overrides)
    return ck


def _bad(tmp_path: Path, obj, name: str = "bad.pth") -> Path:
    p = tmp_path / name
    if isinstance(obj, bytes):
        p.write_bytes(obj)
    else:
        torch.save(obj, p)
    return p


def _state_without(key: str, **add) -> dict:
    state = build_model("tiny").state_dict()
    del state[key]
    state.update(add)
    return state


BAD = {
    "not-torch": (b"\x89PNG\r\n\x1a\n not a checkpoint", r"not a readable PyTorch file"),
    "not-a-dict": ([1, 2, 3], r"not a CellViT checkpoint \(a list"),
    "missing-keys": (
        {"arch": "CellViT256", "epoch": 1},
        r"missing top-level keys \['model_state_dict', 'config'\]",
    ),
    "unknown-arch": (_tiny_ck(arch="CellViTUNI"), r"unknown arch 'CellViTUNI'"),
    "unknown-backbone": (
        _tiny_ck(arch="CellViTSAM", config={"model.backbone": "SAM-X"}),
        r"model.backbone='SAM-X'.*SAM-B, SAM-L, SAM-H",
    ),
    "custom-without-dims": (_tiny_ck(config={"model.backbone": "mystery"}), r"model.embed_dim"),
    "wrong-keys": (
        _tiny_ck(model_state_dict=_state_without("encoder.norm.weight", **{"extra.weight": torch.ones(1)})),
        r"1 missing keys: encoder.norm.weight; 1 unexpected keys: extra.weight",
    ),
    "wrong-arch-for-weights": (
        _tiny_ck(arch="CellViTSAM", config={"model.backbone": "SAM-B"}),
        r"missing keys:.*attn\.rel_pos_h",
    ),
    "wrong-shapes": (
        _tiny_ck(config=flatten({"model": {"backbone": "tiny"}, "data": {"num_nuclei_classes": 5}})),
        r"nuclei_type_maps_decoder.decoder0_header.2.weight: expected \(5, 8, 1, 1\), got \(6, 8, 1, 1\)",
    ),
    "unsafe-global": (_tiny_ck(extra=Foreign()), r"refuses to unpickle .*Foreign"),
    "bad-magnification": (
        _tiny_ck(config=flatten({"model": {"backbone": "tiny"}, "data": {"magnification": 10}})),
        r"data.magnification=10; expected 20 or 40",
    ),
    "bad-normalize": (
        _tiny_ck(
            config=flatten({"model": {"backbone": "tiny"}, "transformations": {"normalize": {"mean": [0.5]}}})
        ),
        r"transformations.normalize.mean",
    ),
    "empty-state": (_tiny_ck(model_state_dict={}), r"data.num_nuclei_classes is missing"),
    "config-not-dict": (_tiny_ck(config=["model.backbone"]), r"config must be dicts, got \w+ and list"),
    "data-parallel": (
        _tiny_ck(model_state_dict={f"module.{k}": v for k, v in build_model("tiny").state_dict().items()}),
        r"strip the prefix",
    ),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_checkpoints(tmp_path, case):
    obj, pattern = BAD[case]
    path = _bad(tmp_path, obj)
    with pytest.raises(CheckpointError, match=pattern) as err:
        load_checkpoint(path)
    assert str(path) in str(err.value)


def test_missing_file(tmp_path):
    with pytest.raises(CheckpointError, match="file not found") as err:
        load_checkpoint(tmp_path / "nope.pth")
    assert "nope.pth" in str(err.value)


def test_numpy_values_in_config_are_accepted(tmp_path):
    conf = {
        "model.backbone": "tiny",
        "data.magnification": np.int64(20),
        "training.lr": np.float32(1e-3),
        "transformations.normalize.mean": np.array([0.5, 0.5, 0.5]),
    }
    path = _bad(tmp_path, _tiny_ck(config=conf, best_metric=np.float64(0.1)))
    _, info = load_checkpoint(path)
    assert info.magnification == 20 and info.mean == (0.5, 0.5, 0.5)
    assert type(info.config["training"]["lr"]) is float


@pytest.mark.parametrize("amp", [False, True])
def test_saved_config_has_every_section_upstream_inference_reads(amp, tmp_path):
    """cellvit==1.0.9 CellViTInference reads these keys of the unflattened config without defaults
    (_get_model, _load_inference_transforms, _setup_amp, the Ray actor's nuclei_types); a checkpoint
    written without `training` failed there with KeyError: 'training'."""
    import dataclasses

    model = build_model("tiny")
    path = tmp_path / "m.pth"
    save_checkpoint(path, model, dataclasses.replace(make_info(model.spec), mixed_precision=amp))
    conf = unflatten(torch.load(path, weights_only=True)["config"])
    assert conf["training"]["mixed_precision"] is amp
    assert conf["data"]["num_nuclei_classes"] == 6 and conf["data"]["num_tissue_classes"] == 19
    assert conf["transformations"]["normalize"]["mean"] == [0.5, 0.5, 0.5]
    assert conf["dataset_config"]["nuclei_types"]["Background"] == 0
    assert "backbone" in conf["model"]
    assert load_checkpoint(path, compute_sha256=False)[1].mixed_precision is amp
