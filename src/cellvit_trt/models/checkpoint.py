"""Load and save CellViT checkpoints in the official format.

Format (TIO-IKIM/CellViT base_ml/base_trainer.py::save_checkpoint): a `torch.save`d dict with `arch`
("CellViT256" | "CellViTSAM"; this package adds "CellViTCustom"), `config` (the "."-flattened wandb config)
and `model_state_dict`, plus training state this loader ignores. Loading never unpickles arbitrary objects:
`torch.load(weights_only=True)`, with only numpy scalar/array and pathlib reconstructors allowed on top.
"""

from __future__ import annotations

import pickle
import re
import zipfile
from pathlib import Path
from typing import Any

import torch

from cellvit_trt.errors import CheckpointError, ConfigError
from cellvit_trt.io import atomic_path, sha256_file
from cellvit_trt.models.cellvit import CellViT
from cellvit_trt.models.fileformat import check_checkpoint_file
from cellvit_trt.models.flat_config import flatten, get, plain, unflatten
from cellvit_trt.models.info import (
    ModelInfo,
    arch_for,
    info_from_config,
    make_info,
    spec_from_config,
    spec_to_config,
)

REQUIRED_KEYS = ("arch", "model_state_dict", "config")
_LIST_MAX = 8  # keys quoted in an error message

# Plain-data reconstructors that wandb/numpy configs may carry (e.g. a numpy float as best_metric).
_SAFE_GLOBALS = {
    "numpy.core.multiarray.scalar",
    "numpy._core.multiarray.scalar",
    "numpy.dtype",
    "numpy.ndarray",
    "numpy.core.multiarray._reconstruct",
    "numpy._core.multiarray._reconstruct",
    "pathlib.PosixPath",
    "pathlib.WindowsPath",
    "pathlib.PurePosixPath",
    "pathlib.PureWindowsPath",
}
_SAFE_PREFIXES = ("numpy.dtypes.",)  # numpy >= 1.25 dtype classes, e.g. numpy.dtypes.Float64DType


def _resolve_global(name: str) -> Any:
    import importlib

    module, _, attr = name.rpartition(".")
    return getattr(importlib.import_module(module), attr)


def _torch_load(path: Path, map_location: Any) -> Any:
    """weights_only load; on a rejected global, allow it only if it is in the plain-data allow-list."""
    allowed: list[Any] = []
    mmap = zipfile.is_zipfile(path)  # big SAM-H files: map instead of reading into memory
    for _ in range(32):
        try:
            with torch.serialization.safe_globals(allowed):
                return torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
        except pickle.UnpicklingError as exc:
            # torch names the object either as a global to import or as a class to build
            found = re.search(r"GLOBAL ([\w.]+)|but got <class '([\w.]+)'>", str(exc))
            if found is None:
                msg = re.search(r"WeightsUnpickler error:\s*([^\n]+)", str(exc))
                detail = msg.group(1).strip()[:200] if msg else type(exc).__name__
                raise CheckpointError(f"checkpoint {path}: not a readable PyTorch file ({detail})") from exc
            name = found.group(1) or found.group(2)
            repeated = any(f"{a.__module__}.{a.__qualname__}" == name for a in allowed)
            if repeated or not (name in _SAFE_GLOBALS or name.startswith(_SAFE_PREFIXES)):
                raise CheckpointError(
                    f"checkpoint {path}: refuses to unpickle {name} (weights_only loading; "
                    "only tensors, plain containers and numpy scalars are accepted)"
                ) from exc
            try:
                allowed.append(_resolve_global(name))
            except (ImportError, AttributeError) as err:
                raise CheckpointError(f"checkpoint {path}: cannot resolve {name} ({err})") from err
        except (RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile, KeyError) as exc:
            raise CheckpointError(
                f"checkpoint {path}: not a readable PyTorch file ({type(exc).__name__}: {exc})"
            ) from exc
    raise CheckpointError(f"checkpoint {path}: too many non-tensor objects to unpickle safely")


def _listing(keys: list[str]) -> str:
    more = f" (+{len(keys) - _LIST_MAX} more)" if len(keys) > _LIST_MAX else ""
    return ", ".join(keys[:_LIST_MAX]) + more


def check_state_dict(model: torch.nn.Module, state: dict[str, Any], where: str) -> None:
    """Strict key and shape check with messages that name the keys (before touching the model)."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    if missing or unexpected:
        hint = ""
        if any(k.startswith("module.") for k in unexpected):
            hint = " (keys start with 'module.': saved from DataParallel; strip the prefix)"
        raise CheckpointError(
            f"{where}: model_state_dict does not match {type(model).__name__} "
            f"{getattr(model, 'spec', None) and model.spec.name}: {len(missing)} missing keys"
            f"{': ' + _listing(missing) if missing else ''}; {len(unexpected)} unexpected keys"
            f"{': ' + _listing(unexpected) if unexpected else ''}{hint}"
        )
    bad = [
        f"{k}: expected {tuple(v.shape)}, got {tuple(state[k].shape)}"
        for k, v in expected.items()
        if not isinstance(state[k], torch.Tensor) or tuple(state[k].shape) != tuple(v.shape)
    ]
    if bad:
        raise CheckpointError(f"{where}: {len(bad)} tensors have the wrong shape: {_listing(bad)}")


def _head_rows(state: dict, *keys: str) -> int | None:
    for key in keys:
        for k in (key, f"module.{key}"):  # DataParallel prefix: still infer, the key check reports it
            if isinstance(state.get(k), torch.Tensor):
                return int(state[k].shape[0])
    return None


def _num_classes(conf: dict, state: dict, where: str) -> tuple[int, int]:
    """From config data.num_*_classes as upstream; else from the head shapes in the state dict."""
    n_nuc = get(conf, "data.num_nuclei_classes")
    n_tis = get(conf, "data.num_tissue_classes")
    if n_nuc is None:
        n_nuc = _head_rows(state, "nuclei_type_maps_decoder.decoder0_header.2.weight")
        if n_nuc is None:
            raise CheckpointError(
                f"{where}: config data.num_nuclei_classes is missing and model_state_dict has no "
                "nuclei_type_maps_decoder.decoder0_header.2.weight to infer it from"
            )
    if n_tis is None:
        n_tis = _head_rows(state, "encoder.head.weight", "classifier_head.weight") or 0
    try:
        return int(n_nuc), int(n_tis)
    except (TypeError, ValueError) as exc:
        raise CheckpointError(
            f"{where}: config data.num_nuclei_classes={n_nuc!r}, data.num_tissue_classes="
            f"{n_tis!r}; expected integers"
        ) from exc


def load_checkpoint(
    path: str | Path, map_location: str | torch.device = "cpu", compute_sha256: bool = True
) -> tuple[CellViT, ModelInfo]:
    """Build the model a checkpoint describes, load its weights strictly; return (eval-mode model, info)."""
    path = check_checkpoint_file(path)
    ck = _torch_load(path, map_location)
    where = f"checkpoint {path}"
    if not isinstance(ck, dict):
        raise CheckpointError(
            f"{where}: not a CellViT checkpoint (a {type(ck).__name__}, expected a dict with "
            f"{', '.join(REQUIRED_KEYS)})"
        )
    missing = [k for k in REQUIRED_KEYS if k not in ck]
    if missing:
        raise CheckpointError(
            f"{where}: not a CellViT checkpoint, missing top-level keys {missing} "
            f"(has {_listing(sorted(map(str, ck)))})"
        )
    state, raw_conf = ck["model_state_dict"], ck["config"]
    if not isinstance(state, dict) or not isinstance(raw_conf, dict):
        raise CheckpointError(
            f"{where}: model_state_dict and config must be dicts, got "
            f"{type(state).__name__} and {type(raw_conf).__name__}"
        )
    conf = unflatten(raw_conf)
    n_nuc, n_tis = _num_classes(conf, state, where)
    try:
        spec = spec_from_config(ck["arch"], conf, where, n_nuc, n_tis)
    except ConfigError as exc:
        raise CheckpointError(f"{where}: {exc}") from exc
    with torch.device("meta"):  # no random init of up to 700 M parameters; weights are assigned below
        model = CellViT(spec)
    check_state_dict(model, state, where)
    expected = model.state_dict()
    state = {k: v.to(dtype=expected[k].dtype) for k, v in state.items()}  # e.g. fp16-saved weights -> fp32
    model.load_state_dict(state, strict=True, assign=True)
    model.eval()
    sha = sha256_file(path) if compute_sha256 else None
    return model, info_from_config(str(ck["arch"]), spec, conf, path, sha, where)


def save_checkpoint(path: str | Path, model: CellViT, info: ModelInfo | None = None, **extra: Any) -> str:
    """Write `model` in the official format, atomically; returns the file's SHA-256.

    The config is `info.config` (if any) updated with the spec's numbers, class names (as upstream's
    `dataset_config.{nuclei,tissue}_types` name->id maps), magnification and normalisation. `extra` adds
    top-level entries (epoch, optimizer_state_dict, ...)."""
    spec = model.spec
    info = info or make_info(spec)
    if info.spec != spec:
        raise ConfigError(
            f"save_checkpoint {path}: info describes {info.spec.name}, the model is {spec.name} "
            "(or their class counts differ)"
        )
    clash = [k for k in extra if k in REQUIRED_KEYS]
    if clash:
        raise ConfigError(f"save_checkpoint {path}: {clash} are written by save_checkpoint itself")
    conf = unflatten(flatten(plain(info.config))) if info.config else {}
    for section, values in spec_to_config(spec).items():
        conf.setdefault(section, {})
        if section == "model":
            conf["model"].pop("decoder", None)
        conf[section].update(values)
    conf["data"]["magnification"] = info.magnification
    conf["dataset_config"] = {
        "nuclei_types": {n: i for i, n in enumerate(info.nuclei_names)},
        "tissue_types": {n: i for i, n in enumerate(info.tissue_names)},
    }
    conf.setdefault("transformations", {})["normalize"] = {"mean": list(info.mean), "std": list(info.std)}
    state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
    obj = {"arch": arch_for(spec), **extra, "config": flatten(conf), "model_state_dict": state}
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)
    return sha256_file(path)
