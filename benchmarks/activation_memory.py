"""Weights and peak live activations per tile of every CellViT variant, counted on the meta device (no memory,
seconds): what a batch of one tile holds at most during PyTorch's eager forward (FP32, batch 1).

    .venv/bin/python benchmarks/activation_memory.py [--size 1024]

The count follows every tensor an operator creates until Python frees it (views share their base's storage,
parameters are not counted). Eager PyTorch materialises every attention map, so for the SAM encoders' global
attention this is an upper bound for engines with fused attention (TensorRT's MHA kernels never hold the
4096 x 4096 maps); ONNX Runtime and TensorRT also reuse buffers across layers, eager PyTorch only frees them.
It sizes what `cellvit_trt.runtime.footprint` then measures on the real backend (docs/runtime.md, "Memory").
"""

from __future__ import annotations

import argparse
import weakref

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from cellvit_trt.models import build_model

VARIANTS = ("tiny", "CellViT256", "SAM-B", "SAM-L", "SAM-H")


class LiveBytes(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.live = self.peak = 0
        self._seen: set[int] = set()

    def _free(self, key: int, nbytes: int) -> None:
        self.live -= nbytes
        self._seen.discard(key)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor) and t._base is None and id(t) not in self._seen:
                nbytes = t.numel() * t.element_size()
                self._seen.add(id(t))
                self.live += nbytes
                self.peak = max(self.peak, self.live)
                weakref.finalize(t, self._free, id(t), nbytes)
        return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=1024)
    a = ap.parse_args()
    print(f"per {a.size} px tile, batch 1, eager PyTorch FP32 on the meta device (GiB = 2^30 bytes)")
    print(f"{'variant':<11} {'params M':>9} {'weights FP16':>13} {'peak activations FP32':>22} {'FP16':>7}")
    for variant in VARIANTS:
        with torch.device("meta"):
            model = build_model(variant).eval()
        params = sum(p.numel() for p in model.parameters())
        x = torch.empty(1, 3, a.size, a.size, device="meta")
        mode = LiveBytes()
        with torch.no_grad(), mode:
            out = model(x)
        del out
        gib = 2**30
        print(
            f"{variant:<11} {params / 1e6:>9.2f} {2 * params / gib:>12.2f}G {mode.peak / gib:>21.2f}G "
            f"{mode.peak / 2 / gib:>6.2f}G"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
