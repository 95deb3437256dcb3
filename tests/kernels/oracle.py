"""Runs the cellvit==1.0.9 tile post-processor (Oracle A, reference §13) on the same maps as ours."""

from __future__ import annotations

import importlib

import numpy as np


def softmax_inputs(maps):
    """Torch dict for post_process_batch and our (fg, hv, type_map): softmax BHWC, raw hv BHWC, argmaxes."""
    import torch

    b = torch.softmax(torch.from_numpy(maps.binary_logits[None]), dim=-1)
    t = torch.softmax(torch.from_numpy(maps.type_logits[None]), dim=-1)
    hv = torch.from_numpy(maps.hv.astype(np.float32)).permute(1, 2, 0)[None].contiguous()
    d = {"nuclei_binary_map": b, "nuclei_type_map": t, "hv_map": hv}
    fg = np.argmax(b[0].numpy(), axis=-1).astype(np.uint8)
    type_map = np.argmax(t[0].numpy(), axis=-1).astype(np.uint8)
    return d, fg, type_map, b[0, ..., 1].numpy()


def run_oracle(upstream, d):
    mod = importlib.import_module("cellvit.inference.postprocessing_numpy")
    pp = mod.DetectionCellPostProcessor(wsi=None, nr_types=6)
    inst, cells = pp.post_process_batch(d)
    return inst[0].numpy().astype(np.int32), cells[0]
