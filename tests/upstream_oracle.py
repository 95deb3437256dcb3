"""The upstream `cellvit==1.0.9` models as a parity oracle (tests and benchmarks only: never in the package).

    from upstream_oracle import import_upstream, upstream_model, randomized_pair   # tests/ on sys.path

Needs the `cellvit` package (see tests/requirements-oracle.txt). Upstream imports `ray` at module level for
its post-processing actor, which the oracle paths never use. Where Ray is installed (the `ray` extra), the
real module is imported; only where no `ray` can be found at all is an empty stand-in registered, marked
`__cellvit_trt_stub__`, so it never shadows a real Ray in the process (`cellvit_trt.scale` refuses it too).
This file lives under tests/ so that nothing in the installed package can replace `sys.modules["ray"]`.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import sys
import types
from collections.abc import Iterator

import torch
from torch import nn

from cellvit_trt.errors import DependencyError

RAY_STUB_MARK = "__cellvit_trt_stub__"


def _ensure_ray() -> None:
    """The real `ray` when it is installed (an import error of a real Ray propagates: it is never masked by
    the stand-in); an empty marked module only when no `ray` is installed."""
    if "ray" in sys.modules:
        return
    if importlib.util.find_spec("ray") is not None:
        importlib.import_module("ray")
        return
    stub = types.ModuleType("ray", "cellvit-trt test stand-in: Ray is not installed")
    setattr(stub, RAY_STUB_MARK, True)
    sys.modules["ray"] = stub


def import_upstream() -> types.ModuleType:
    _ensure_ray()
    try:
        return importlib.import_module("cellvit")
    except ImportError as exc:
        raise DependencyError(
            f"the upstream oracle needs cellvit==1.0.9 (pip install --no-deps cellvit==1.0.9): {exc}"
        ) from exc


@contextlib.contextmanager
def _meta_safe_linspace() -> Iterator[None]:
    # upstream's VisionTransformer calls torch.linspace(...).item() for drop-path rates, which fails
    # under torch.device("meta"); keep that one factory on the CPU while building on meta
    orig = torch.linspace

    def linspace(*args, **kwargs):  # type: ignore[no-untyped-def]
        kwargs["device"] = "cpu"
        return orig(*args, **kwargs)

    torch.linspace = linspace  # type: ignore[assignment]
    try:
        yield
    finally:
        torch.linspace = orig  # type: ignore[assignment]


def upstream_model(
    variant: str,
    num_nuclei_classes: int = 6,
    num_tissue_classes: int = 19,
    regression_loss: bool = False,
    device: str | torch.device = "cpu",
) -> nn.Module:
    """Upstream CellViT256 / CellViTSAM(vit_structure=variant), randomly initialised, in eval mode.
    `device="meta"` builds without memory (for key/shape and FLOP counting of SAM-L/H)."""
    import_upstream()
    ctx = contextlib.ExitStack()
    if torch.device(device).type == "meta":
        ctx.enter_context(_meta_safe_linspace())
    ctx.enter_context(torch.device(device))
    with ctx:
        if variant == "CellViT256":
            mod = importlib.import_module("cellvit.models.cell_segmentation.cellvit_256")
            model = mod.CellViT256(
                None, num_nuclei_classes, num_tissue_classes, regression_loss=regression_loss
            )
        elif variant.upper() in ("SAM-B", "SAM-L", "SAM-H"):
            mod = importlib.import_module("cellvit.models.cell_segmentation.cellvit_sam")
            model = mod.CellViTSAM(
                None, num_nuclei_classes, num_tissue_classes, variant, regression_loss=regression_loss
            )
        else:
            raise ValueError(f"upstream has no model {variant!r} (CellViT256, SAM-B, SAM-L, SAM-H)")
    return model.eval()


@torch.no_grad()
def randomize_(model: nn.Module, seed: int = 0, scale: float = 0.05) -> nn.Module:
    """Fill every floating tensor of the state dict (weights, pos-embeds, rel-pos tables, BN statistics) with
    seeded noise, so no parameter stays at its all-zero/identity init and parity covers every path."""
    g = torch.Generator().manual_seed(seed)
    for key, t in model.state_dict().items():
        if not t.is_floating_point():
            continue
        noise = torch.randn(t.shape, generator=g, dtype=torch.float32) * scale
        if key.endswith("running_var"):
            noise = 1.0 + noise.abs()
        elif key.endswith(("norm1.weight", "norm2.weight", "norm.weight", "running_mean")) or (
            t.ndim == 1 and key.endswith("weight") and "block.2" in key
        ):
            noise = noise + (1.0 if not key.endswith("running_mean") else 0.0)
        t.copy_(noise.to(t.dtype))
    return model


def randomized_pair(
    variant: str,
    regression_loss: bool = False,
    seed: int = 0,
    num_nuclei_classes: int = 6,
    num_tissue_classes: int = 19,
) -> tuple[nn.Module, nn.Module]:
    """(upstream, ours) in eval mode with the same seeded random weights, loaded strictly into ours.

    Both are built on the meta device and then filled (no costly default init, which `randomize_`
    overwrites anyway); ours is assigned the upstream tensors, so the pair shares its memory."""
    from cellvit_trt.models.registry import build_model

    up = upstream_model(variant, num_nuclei_classes, num_tissue_classes, regression_loss, device="meta")
    up = up.to_empty(device="cpu")
    with torch.no_grad():
        for t in up.state_dict().values():
            if not t.is_floating_point():
                t.zero_()  # num_batches_tracked
    randomize_(up, seed)
    with torch.device("meta"):
        ours = build_model(variant, num_nuclei_classes, num_tissue_classes, regression_loss)
    ours.load_state_dict(up.state_dict(), strict=True, assign=True)
    return up.eval(), ours.eval()


def max_abs_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> dict[str, float]:
    """Per output key; raises KeyError naming the keys if the two dicts differ."""
    if list(a) != list(b):
        raise KeyError(f"output keys differ: {list(a)} vs {list(b)}")
    out = {}
    for k in a:
        if a[k].shape != b[k].shape:
            raise ValueError(f"output {k}: shape {tuple(a[k].shape)} vs {tuple(b[k].shape)}")
        out[k] = float((a[k].float() - b[k].float()).abs().max())
    return out
