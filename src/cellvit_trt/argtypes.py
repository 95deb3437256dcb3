"""argparse `type=` callables for numbers: a bad value is a usage error (exit 2) before anything runs.

    p.add_argument("--tile-size", type=positive_int)
    # cellvit-trt run: error: argument --tile-size: expected an integer >= 1, got '-256'   (exit 2)

Every numeric option of every command uses one of these (tests/core/test_argtypes.py walks the parsers), so
`--tile-size -256` or `--duration nan` never reaches a model, a reader or a benchmark loop.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable


def _number(
    kind: type, low: float | None, high: float | None, low_open: bool = False
) -> Callable[[str], float]:
    what = "an integer" if kind is int else "a number"
    bounds = []
    if low is not None:
        bounds.append(f"{'>' if low_open else '>='} {low:g}")
    if high is not None:
        bounds.append(f"<= {high:g}")
    expected = f"{what} {' and '.join(bounds)}".strip()

    def parse(text: str):
        try:
            value = kind(text)
        except (TypeError, ValueError):
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None
        if kind is float and not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
        if low is not None and (value <= low if low_open else value < low):
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
        if high is not None and value > high:
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
        return value

    parse.__name__ = expected  # argparse names the type in some messages
    return parse


positive_int = _number(int, 1, None)
nonnegative_int = _number(int, 0, None)
positive_float = _number(float, 0.0, None, low_open=True)
nonnegative_float = _number(float, 0.0, None)
fraction = _number(float, 0.0, 1.0)  # a share, 0 to 1


def int_range(low: int, high: int) -> Callable[[str], int]:
    """An integer in [low, high] (e.g. a JPEG quality 1-100)."""
    return _number(int, low, high)  # type: ignore[return-value]


NUMERIC_TYPES = (positive_int, nonnegative_int, positive_float, nonnegative_float, fraction)
