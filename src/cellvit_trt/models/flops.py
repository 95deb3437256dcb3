"""Forward FLOPs of a CellViT, counted by torch's FlopCounterMode (2 FLOPs per multiply-add; matmul, bmm,
einsum and (transposed) convolutions; elementwise ops, norms and softmax are not counted).

Counting runs on the meta device, so SAM-H costs no memory or compute. `upstream_style` adds the two extra
evaluations of the shared skip decoders that upstream's `_forward_upsample` performs per branch.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


@dataclass(frozen=True)
class FlopReport:
    variant: str
    size: int
    ours: int  # one forward of cellvit_trt's CellViT
    skip_decoders: int  # decoder0..3 once
    branches: int = 3

    @property
    def upstream_style(self) -> int:
        return self.ours + (self.branches - 1) * self.skip_decoders

    @property
    def saved(self) -> int:
        return self.upstream_style - self.ours


def count_flops(module: nn.Module, *inputs: torch.Tensor, **kwargs: object) -> int:
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        module(*inputs, **kwargs)
    return int(counter.get_total_flops())


def _on_meta(model: nn.Module) -> nn.Module:
    if all(p.device.type == "meta" for p in model.parameters()):
        return model
    from cellvit_trt.models.cellvit import CellViT

    with torch.device("meta"):
        return CellViT(model.spec).eval()


def flop_report(model: nn.Module, size: int = 1024, batch: int = 1) -> FlopReport:
    """FLOPs for one (batch, 3, size, size) forward; a model with real weights is rebuilt on meta first."""
    meta = _on_meta(model)
    x = torch.empty(batch, 3, size, size, device="meta")
    ours = count_flops(meta, x)
    with torch.no_grad():
        _, (z1, z2, z3, _z4) = meta.encoder(x)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        meta.decoder0(x), meta.decoder1(z1), meta.decoder2(z2), meta.decoder3(z3)
    return FlopReport(meta.spec.name, size, ours, int(counter.get_total_flops()))
