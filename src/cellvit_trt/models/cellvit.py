"""CellViT: encoder + shared skip decoders + three upsampling branches (composition only).

Same state-dict keys, shapes and outputs as upstream `CellViT256` / `CellViTSAM` (cellvit==1.0.9).
"""

from __future__ import annotations

import torch
from torch import nn

from cellvit_trt.errors import InputError
from cellvit_trt.models.decoder import UpsamplingBranch, skip_decoders
from cellvit_trt.models.sam_encoder import SAMEncoder
from cellvit_trt.models.spec import PATCH_SIZE, CellViTSpec
from cellvit_trt.models.vit256 import ViT256Encoder


class CellViT(nn.Module):
    """forward(x: float32[B, 3, H, W] normalised, H and W multiples of 16) -> dict of logits:

    - `tissue_types` (B, num_tissue_classes)
    - `nuclei_binary_map` (B, 2, H, W)
    - `regression_map` (B, 2, H, W), only with `regression_loss` (binary-branch channels 2:4)
    - `hv_map` (B, 2, H, W), raw
    - `nuclei_type_map` (B, num_nuclei_classes, H, W)
    - `tokens` (B, E, H/16, W/16), only with `retrieve_tokens`: the last block's output, no norm
    """

    def __init__(
        self,
        spec: CellViTSpec,
        drop_rate: float = 0.0,
        attn_drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
    ):
        super().__init__()
        self.spec = spec
        enc, dec = spec.encoder, spec.decoder
        self.embed_dim = enc.embed_dim
        self.num_nuclei_classes = spec.num_nuclei_classes
        self.num_tissue_classes = spec.num_tissue_classes
        self.regression_loss = spec.regression_loss
        if enc.kind == "vit256":
            # the tissue head lives inside the encoder (`encoder.head`), as upstream
            self.encoder: nn.Module = ViT256Encoder(
                enc, spec.num_tissue_classes, 3, drop_rate, attn_drop_rate, drop_path_rate
            )
        else:
            self.encoder = SAMEncoder(enc)
        self.decoder0, self.decoder1, self.decoder2, self.decoder3 = skip_decoders(
            enc.embed_dim, dec, drop_rate
        )
        n_binary = 4 if spec.regression_loss else 2
        self.nuclei_binary_map_decoder = UpsamplingBranch(enc.embed_dim, dec, n_binary, drop_rate)
        self.hv_map_decoder = UpsamplingBranch(enc.embed_dim, dec, 2, drop_rate)
        self.nuclei_type_maps_decoder = UpsamplingBranch(
            enc.embed_dim, dec, spec.num_nuclei_classes, drop_rate
        )
        # SAM: top-level `classifier_head` on the mean-pooled neck, registered last; ViT256: no keys
        if enc.kind == "sam" and spec.num_tissue_classes > 0:
            self.classifier_head: nn.Module = nn.Linear(enc.out_chans, spec.num_tissue_classes)
        else:
            self.classifier_head = nn.Identity()

    def forward(self, x: torch.Tensor, retrieve_tokens: bool = False) -> dict[str, torch.Tensor]:
        if x.ndim != 4 or x.shape[1] != 3 or x.shape[-2] % PATCH_SIZE or x.shape[-1] % PATCH_SIZE:
            raise InputError(
                f"CellViT input: got shape {tuple(x.shape)}, "
                f"expected (B, 3, H, W) with H, W multiples of {PATCH_SIZE}"
            )
        tissue, (z1, z2, z3, z4) = self.encoder(x)
        out = {"tissue_types": self.classifier_head(tissue)}
        # shared skips, once per forward (upstream: once per branch)
        skips = (self.decoder0(x), self.decoder1(z1), self.decoder2(z2), self.decoder3(z3))
        binary = self.nuclei_binary_map_decoder(z4, skips)
        if self.regression_loss:
            out["nuclei_binary_map"] = binary[:, :2, :, :]
            out["regression_map"] = binary[:, 2:, :, :]
        else:
            out["nuclei_binary_map"] = binary
        out["hv_map"] = self.hv_map_decoder(z4, skips)
        out["nuclei_type_map"] = self.nuclei_type_maps_decoder(z4, skips)
        if retrieve_tokens:
            out["tokens"] = z4
        return out
