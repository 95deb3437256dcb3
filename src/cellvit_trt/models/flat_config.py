"""The "."-joined flat config that CellViT checkpoints store (a flattened wandb config), and back."""

from __future__ import annotations

from pathlib import PurePath
from typing import Any


def flatten(d: dict, parent: str = "", sep: str = ".") -> dict[str, Any]:
    """{"a": {"b": 1}} -> {"a.b": 1}; like upstream cellvit/utils/tools.py::flatten_dict (keys become str)."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{parent}{sep}{k}" if parent else str(k)
        if isinstance(v, dict) and v:
            out.update(flatten(v, key, sep))
        else:
            out[key] = plain(v)
    return out


def unflatten(d: dict, sep: str = ".") -> dict[str, Any]:
    """{"a.b": 1} -> {"a": {"b": 1}}. Shorter paths first: deeper keys beat scalar parents, as upstream."""
    out: dict[str, Any] = {}
    for key, value in sorted(d.items(), key=lambda kv: len(str(kv[0]).split(sep))):
        parts = str(key).split(sep)
        node = out
        for p in parts[:-1]:
            if not isinstance(node.get(p), dict):
                node[p] = {}
            node = node[p]
        node[parts[-1]] = unflatten(value, sep) if isinstance(value, dict) else plain(value)
    return out


def plain(v: Any) -> Any:
    """Numpy scalars/arrays, tuples and paths -> plain Python, so the config survives weights_only loading."""
    if isinstance(v, (list, tuple)):
        return [plain(x) for x in v]
    if isinstance(v, dict):
        return {str(k): plain(x) for k, x in v.items()}
    if isinstance(v, PurePath):
        return str(v)
    if type(v).__module__ == "numpy":
        return v.tolist() if hasattr(v, "tolist") else v.item()
    return v


def get(conf: dict, dotted: str, default: Any = None) -> Any:
    node: Any = conf
    for p in dotted.split("."):
        if not isinstance(node, dict) or p not in node:
            return default
        node = node[p]
    return node
