"""CellViT training losses, as upstream defines them (TIO-IKIM/CellViT base_ml/base_loss.py).

Upstream's defaults when a config names no loss (cell_segmentation/experiments/experiment_cellvit_pannuke.py
::get_loss_fn), all with weight 1:

| branch | losses |
|---|---|
| nuclei_binary_map | xentropy_loss + dice_loss (on softmax probabilities against one-hot targets) |
| hv_map | mse_loss_maps + msge_loss_maps (gradient MSE on nucleus pixels) |
| nuclei_type_map | xentropy_loss + dice_loss |
| tissue_types | nn.CrossEntropyLoss on the logits |

One deliberate difference: upstream's MSGE builds its 5x5 Sobel-like kernels with `meshgrid(indexing="ij")`,
so the "horizontal" kernel differentiates along rows and is applied to the horizontal map (a HoVer-Net quirk
that penalises d(h)/dy). Here each map is differentiated along its own axis, d(h)/dx and d(v)/dy, which is
what the loss is meant to measure. `upstream_msge_orientation=True` restores upstream's behaviour.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

_EPS_XENT = 10e-8  # upstream XentropyLoss epsilon
_SMOOTH_DICE = 1e-3  # upstream DiceLoss default


def xentropy_loss(prob: torch.Tensor, target_onehot: torch.Tensor) -> torch.Tensor:
    """Mean pixel cross entropy of class probabilities [B,C,H,W] against one-hot targets [B,C,H,W]."""
    pred = prob / prob.sum(dim=1, keepdim=True)
    pred = pred.clamp(_EPS_XENT, 1.0 - _EPS_XENT)
    return -(target_onehot * torch.log(pred)).sum(dim=1).mean()


def dice_loss(prob: torch.Tensor, target_onehot: torch.Tensor, smooth: float = _SMOOTH_DICE) -> torch.Tensor:
    """Sum over classes of 1 - soft Dice, each class pooled over the batch (upstream DiceLoss)."""
    inse = (prob * target_onehot).sum(dim=(0, 2, 3))
    left = prob.sum(dim=(0, 2, 3))
    right = target_onehot.sum(dim=(0, 2, 3))
    return (1.0 - (2.0 * inse + smooth) / (left + right + smooth)).sum()


def mse_loss_maps(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return ((pred - target) ** 2).mean()


def _sobel_kernels(size: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    r = torch.arange(-(size // 2), size // 2 + 1, dtype=torch.float32, device=device)
    rows, cols = torch.meshgrid(r, r, indexing="ij")
    denom = rows * rows + cols * cols + 1.0e-15
    return cols / denom, rows / denom  # d/dx (varies along columns), d/dy (varies along rows)


def msge_loss_maps(
    pred: torch.Tensor, target: torch.Tensor, focus: torch.Tensor, upstream_orientation: bool = False
) -> torch.Tensor:
    """MSE of the 5x5 Sobel-like gradients of HV maps [B,2,H,W] over nucleus pixels `focus` [B,H,W]."""
    kx, ky = _sobel_kernels(5, pred.device)
    if upstream_orientation:
        kx, ky = ky, kx
    kernels = torch.stack([kx, ky]).unsqueeze(1)  # [2,1,5,5]: channel 0 (h) by d/dx, channel 1 (v) by d/dy

    def grad(hv: torch.Tensor) -> torch.Tensor:
        return F.conv2d(hv, kernels.to(hv.dtype), padding=2, groups=2)

    diff = grad(pred) - grad(target)
    f = focus.unsqueeze(1).to(pred.dtype).expand_as(diff)
    return (f * diff * diff).sum() / (f.sum() + 1.0e-8)


@dataclass(frozen=True)
class LossWeights:
    """Upstream default weights (all 1). Set `tissue_ce` to 0 to ignore the tissue head."""

    binary_xentropy: float = 1.0
    binary_dice: float = 1.0
    hv_mse: float = 1.0
    hv_msge: float = 1.0
    type_xentropy: float = 1.0
    type_dice: float = 1.0
    tissue_ce: float = 1.0


def cellvit_loss(
    out: dict[str, torch.Tensor],
    binary: torch.Tensor,
    hv: torch.Tensor,
    types: torch.Tensor,
    tissue: torch.Tensor,
    num_types: int,
    weights: LossWeights = LossWeights(),
    upstream_msge_orientation: bool = False,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Total loss and its parts. Targets: binary int64 [B,H,W], hv float32 [B,2,H,W], types int64 [B,H,W],
    tissue int64 [B] (-1 = no label)."""
    bin_prob = torch.softmax(out["nuclei_binary_map"], dim=1)
    bin_1h = F.one_hot(binary, 2).permute(0, 3, 1, 2).to(bin_prob.dtype)
    type_prob = torch.softmax(out["nuclei_type_map"], dim=1)
    type_1h = F.one_hot(types, num_types).permute(0, 3, 1, 2).to(type_prob.dtype)
    parts = {
        "binary_xentropy": xentropy_loss(bin_prob, bin_1h),
        "binary_dice": dice_loss(bin_prob, bin_1h),
        "hv_mse": mse_loss_maps(out["hv_map"], hv),
        "hv_msge": msge_loss_maps(out["hv_map"], hv, binary, upstream_msge_orientation),
        "type_xentropy": xentropy_loss(type_prob, type_1h),
        "type_dice": dice_loss(type_prob, type_1h),
    }
    labelled = tissue >= 0
    if weights.tissue_ce > 0 and bool(labelled.any()):
        parts["tissue_ce"] = F.cross_entropy(out["tissue_types"][labelled], tissue[labelled])
    total = sum(getattr(weights, k) * v for k, v in parts.items())
    return total, {k: float(v.detach()) for k, v in parts.items()}
