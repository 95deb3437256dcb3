"""Where `validate` reads its pass/fail thresholds: the export parity gate's table (one place for both)."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def thresholds_for(precision: str, path: str | Path | None = None) -> Any:
    """The gate's `Thresholds` for 'fp32' | 'fp16' | 'int8', from gate_thresholds.yaml or `path`.

    Returns an object with `min`/`max` dicts and `check(metrics) -> (failures, not_applicable)`.
    """
    from cellvit_trt.export.gate import load_thresholds

    return load_thresholds(precision, None if path is None else str(path))
