"""Files shipped with the package: the synthetic-data demo checkpoint."""

from __future__ import annotations

from pathlib import Path

from cellvit_trt.errors import CheckpointError

DEMO_CHECKPOINT = "cellvit-tiny-synthetic-demo.pth"


def demo_checkpoint_path() -> Path:
    """Path of the shipped demo model: the "tiny" CellViT trained on `cellvit_trt.synthetic` tiles only.

    It exists to run and test the whole product without downloading weights; it is not a pathology model.
    """
    path = Path(__file__).with_name(DEMO_CHECKPOINT)
    if not path.is_file():
        raise CheckpointError(
            f"demo checkpoint {path}: not found (the package was installed without its data files)"
        )
    return path
