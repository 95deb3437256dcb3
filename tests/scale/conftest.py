"""Shared artefacts of the scale-out tests: the demo model as a 256 px ONNX graph (exported once), small
synthetic Aperio slides of 256 px tiles (about 3 x 3 tiles each) and one corrupt slide. Helpers are in
scale_helpers.py."""

from __future__ import annotations

from pathlib import Path

import pytest
from scale_helpers import TILE

SLIDES = {"s0": (600, 500, 10), "s1": (700, 420, 11), "s2": (520, 520, 12)}  # width, height, seed


@pytest.fixture(scope="session")
def demo_onnx(tmp_path_factory) -> Path:
    """The shipped demo checkpoint as the deployment graph `cellvit-trt run` exports from it (256 px, FP32;
    the export's parity gate is the export tests' business)."""
    pytest.importorskip("torch")
    from cellvit_trt.runtime.backends import demo_checkpoint, export_cached

    return export_cached(
        demo_checkpoint(), TILE, "fp32", cache_dir=tmp_path_factory.mktemp("onnx"), gate=False
    )


@pytest.fixture(scope="session")
def slides(tmp_path_factory) -> dict[str, Path]:
    from cellvit_trt.synthetic import write_synthetic_slide

    d = tmp_path_factory.mktemp("slides")
    out = {}
    for name, (w, h, seed) in SLIDES.items():
        out[name] = d / f"{name}.svs"
        write_synthetic_slide(
            out[name],
            width=w,
            height=h,
            mpp=0.25,
            seed=seed,
            tile_size=TILE,
            downsamples=(1,),
            write_labels=False,
            glass_fraction=0.0,
        )
    out["bad"] = d / "bad.svs"
    out["bad"].write_bytes(b"II*\x00" + bytes(100))  # a TIFF header and nothing else
    return out
