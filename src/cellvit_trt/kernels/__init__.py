"""Numba/OpenCV post-processing: deployment-graph maps -> instance map + cell table (cellvit 1.0.9 parity)."""

from cellvit_trt.jit_cache import keyed_cache

with keyed_cache():  # every kernel module is first imported here (test_jit_cache checks): keyed
    from cellvit_trt.kernels.params import PostProcessParams
    from cellvit_trt.kernels.postprocess import PostProcessor, instance_map, warmup
    from cellvit_trt.kernels.table import CellTable, TileCells

__all__ = ["PostProcessParams", "PostProcessor", "CellTable", "TileCells", "instance_map", "warmup"]
