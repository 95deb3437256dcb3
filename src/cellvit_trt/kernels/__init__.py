"""Numba/OpenCV post-processing: deployment-graph maps -> instance map + cell table (cellvit 1.0.9 parity)."""

from cellvit_trt.jit_cache import keyed_cache

with keyed_cache():  # every kernel module is imported from here, so all of them cache by source (jit_cache)
    from cellvit_trt.kernels import replicas, sobel  # noqa: F401  (not all are reached through postprocess)
    from cellvit_trt.kernels.params import PostProcessParams
    from cellvit_trt.kernels.postprocess import PostProcessor, instance_map, warmup
    from cellvit_trt.kernels.table import CellTable, TileCells

__all__ = ["PostProcessParams", "PostProcessor", "CellTable", "TileCells", "instance_map", "warmup"]
