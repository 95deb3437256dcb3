"""Build progress from TensorRT's `IProgressMonitor` (TensorRT >= 10.0); Ctrl-C cancels a build cleanly.

A SAM-H build takes minutes; the monitor reports each top-level phase and its duration. KeyboardInterrupt
raised inside a callback cannot cross TensorRT's C++ frames, so it is caught there and turned into a cancel
request (step_complete returns False), as NVIDIA's simple_progress_monitor sample does.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from types import ModuleType
from typing import Any


def make_progress_monitor(trt: ModuleType, report: Callable[[str], None]) -> Any | None:
    """An `IProgressMonitor` that calls `report(text)` per top-level phase; None where TensorRT has none."""
    base = getattr(trt, "IProgressMonitor", None)
    if base is None:
        return None

    class _Monitor(base):  # type: ignore[misc, valid-type]
        def __init__(self) -> None:
            base.__init__(self)
            self.cancelled = False
            self._depth: dict[str, int] = {}
            self._started: dict[str, float] = {}

        def phase_start(self, phase_name: str, parent_phase: str | None, num_steps: int) -> None:
            try:
                depth = 0 if parent_phase is None else self._depth.get(parent_phase, 0) + 1
                self._depth[phase_name] = depth
                self._started[phase_name] = time.perf_counter()
                if depth == 0:
                    report(f"TensorRT: {phase_name} ({num_steps} steps)")
            except KeyboardInterrupt:
                self.cancelled = True

        def step_complete(self, phase_name: str, step: int) -> bool:
            try:
                return not self.cancelled
            except KeyboardInterrupt:
                self.cancelled = True
                return False

        def phase_finish(self, phase_name: str) -> None:
            try:
                if self._depth.pop(phase_name, 1) == 0:
                    seconds = time.perf_counter() - self._started.pop(phase_name, time.perf_counter())
                    report(f"TensorRT: {phase_name} done in {seconds:.1f} s")
            except KeyboardInterrupt:
                self.cancelled = True

    return _Monitor()
