"""Compile the post-processing kernels into Numba's cache (NUMBA_CACHE_DIR) before the test workers start.

Without it, on a clean checkout, both pytest workers and the CLI subprocesses of the first minutes each
compile the same kernels (~30 s of CPU apiece). Covers what most tests call: the region and whole-tile paths,
float16 and float32 HV.
"""

from __future__ import annotations

import time

import numpy as np

from cellvit_trt.kernels import PostProcessor, PostProcessParams
from cellvit_trt.kernels.postprocess import instance_map_full, warmup_tile


def main() -> None:
    t0, c0 = time.perf_counter(), time.process_time()
    fg, hv, types = warmup_tile()
    for dtype in (np.float16, np.float32):
        PostProcessor().process_tile(fg, hv.astype(dtype), types)
    instance_map_full(fg, hv.astype(np.float32), PostProcessParams())
    print(
        f"[warm] post-processing kernels ready in {time.perf_counter() - t0:.1f} s "
        f"({time.process_time() - c0:.1f} s CPU)",
        flush=True,
    )


if __name__ == "__main__":
    main()
