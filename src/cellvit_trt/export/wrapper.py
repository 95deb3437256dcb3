"""The deployment graph as a PyTorch module (SAM's SamOnnxModel style): CellViT itself stays untouched.

    uint8 image [N, H, W, 3] RGB -> normalise in-graph -> CellViT -> decisions and casts ->
    fg uint8 [N,H,W], hv float16|32 [N,2,H,W], type_map uint8 [N,H,W], tissue_logits float32 [N,T],
    (tokens float16 [N,E,H/16,W/16])

Decisions are `argmax(softmax(logits, 1), 1)` in FP32, exactly upstream's order of operations: softmax can
turn nearly equal logits into exactly equal probabilities, and then the lowest class id wins (ArgMax with
select_last_index=0), which an argmax over logits would not reproduce.

Submodule names (`normalize`, `decide_fg`, `decide_type`) become ONNX node-name scopes; the FP16 recipe keeps
those scopes in FP32 (see `precision.py`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import nn

OUTPUTS = ("fg", "hv", "type_map", "tissue_logits")
FP32_SCOPES = ("/normalize/", "/decide_fg/", "/decide_type/")


class Normalize(nn.Module):
    """uint8 NHWC -> float32 NCHW, `(x / 255 - mean) / std` (torchvision ToTensor + Normalize op order)."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]):
        super().__init__()
        self.register_buffer("mean", torch.tensor(list(mean), dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(list(std), dtype=torch.float32).view(1, 3, 1, 1))

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        x = image.permute(0, 3, 1, 2).to(torch.float32) / 255.0
        return (x - self.mean) / self.std


class Decide(nn.Module):
    """argmax(softmax(logits)) over channels as uint8; FP32 whatever precision produced the logits."""

    def forward(self, logits: torch.Tensor) -> torch.Tensor:
        probs = torch.softmax(logits.to(torch.float32), dim=1)
        return torch.argmax(probs, dim=1).to(torch.uint8)


class DeploymentGraph(nn.Module):
    def __init__(
        self,
        model: nn.Module,
        mean: Sequence[float],
        std: Sequence[float],
        hv_dtype: torch.dtype = torch.float16,
        tokens: bool = False,
    ):
        super().__init__()
        self.normalize = Normalize(mean, std)
        self.model = model
        self.decide_fg = Decide()
        self.decide_type = Decide()
        self.hv_dtype = hv_dtype
        self.tokens = tokens

    @property
    def output_names(self) -> list[str]:
        return list(OUTPUTS) + (["tokens"] if self.tokens else [])

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = self.model(self.normalize(image), retrieve_tokens=self.tokens)
        result = (
            self.decide_fg(out["nuclei_binary_map"]),
            out["hv_map"].to(self.hv_dtype),
            self.decide_type(out["nuclei_type_map"]),
            out["tissue_types"].to(torch.float32),
        )
        if self.tokens:
            result = result + (out["tokens"].to(torch.float16),)
        return result


class _FrozenPosEmbed:
    """Callable standing in for a pos-embed method: returns one precomputed constant for the export size."""

    def __init__(self, value: torch.Tensor):
        self.value = value.detach().clone()

    def __call__(self, *args: object, **kwargs: object) -> torch.Tensor:
        return self.value


class _ChannelLayerNorm(nn.Module):
    """SAM's hand-written LayerNorm2d (mean/pow/sqrt over channels of NCHW) as one LayerNormalization node.

    Same formula (biased variance, eps inside the sqrt); exporting it as a single node lets TensorRT use its
    normalisation layer and lets the FP16 recipe keep it in FP32 by op type.
    """

    def __init__(self, original: nn.Module):
        super().__init__()
        self.weight = original.weight
        self.bias = original.bias
        self.eps = float(original.eps)
        self.shape = (int(original.weight.shape[0]),)  # a Python constant: traced shapes would become ops

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.permute(0, 2, 3, 1)
        x = F.layer_norm(x, self.shape, self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)


def _set_child(root: nn.Module, dotted: str, module: nn.Module) -> None:
    parent_name, _, child = dotted.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    setattr(parent, child, module)


@contextlib.contextmanager
def export_patches(model: nn.Module, tile_size: int) -> Iterator[dict[str, int]]:
    """Temporarily make `model` export cleanly at a fixed tile size; everything is restored afterwards.

    - ViT-256 pos-embed: the bicubic interpolation (DINO `interpolate_pos_encoding`, or `pos_embed_for`) is
      evaluated once, eagerly, with the exact upstream call, and frozen as a constant: no Resize op.
    - LayerNorm2d: replaced by an equivalent single-node LayerNormalization.
    Yields counts of what was patched (for the export report).
    """
    grid = tile_size // 16
    patched_methods: list[tuple[nn.Module, str]] = []
    swapped: list[tuple[str, nn.Module]] = []
    counts = {"pos_embed_frozen": 0, "layernorm2d_swapped": 0}
    try:
        with torch.no_grad():
            for _name, mod in model.named_modules():
                if callable(getattr(mod, "pos_embed_for", None)):
                    value = mod.pos_embed_for(grid, grid)
                    mod.pos_embed_for = _FrozenPosEmbed(value)
                    patched_methods.append((mod, "pos_embed_for"))
                    counts["pos_embed_frozen"] += 1
                elif callable(getattr(mod, "interpolate_pos_encoding", None)) and hasattr(mod, "pos_embed"):
                    n_tokens = grid * grid + 1
                    dummy = torch.zeros(1, n_tokens, mod.pos_embed.shape[-1])
                    # upstream unpacks (B, nc, w, h) = x.shape; the tile is square, so w == h == tile_size
                    value = mod.interpolate_pos_encoding(dummy, tile_size, tile_size)
                    mod.interpolate_pos_encoding = _FrozenPosEmbed(value)
                    patched_methods.append((mod, "interpolate_pos_encoding"))
                    counts["pos_embed_frozen"] += 1
        for name, mod in list(model.named_modules()):
            if type(mod).__name__ == "LayerNorm2d" and hasattr(mod, "weight") and hasattr(mod, "eps"):
                swapped.append((name, mod))
                _set_child(model, name, _ChannelLayerNorm(mod))
                counts["layernorm2d_swapped"] += 1
        yield counts
    finally:
        for mod, attr in patched_methods:
            with contextlib.suppress(AttributeError):
                delattr(mod, attr)  # the instance attribute shadowed the class method
        for name, mod in swapped:
            _set_child(model, name, mod)
