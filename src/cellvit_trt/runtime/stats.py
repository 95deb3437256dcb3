"""Per-stage timings of a pipeline run (also reused by `cellvit-trt bench`).

Times are seconds of *busy* work per stage (summed over that stage's threads), plus the two waits that say
where
the bottleneck is: `backend_wait_input_s` (the backend had nothing to do: reading/tiling is too slow) and
`backend_wait_output_s` (the backend was blocked by a full post-processing queue: the CPU side is too slow).
"""

from __future__ import annotations

import threading
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

STAGES = ("read", "batch", "infer", "post", "sink")


@dataclass
class Stats:
    tiles: int = 0
    batches: int = 0
    wall_s: float = 0.0
    stage_s: dict[str, float] = field(default_factory=lambda: dict.fromkeys(STAGES, 0.0))
    backend_wait_input_s: float = 0.0
    backend_wait_output_s: float = 0.0
    backend_s: float = 0.0  # wall time of the backend thread's loop
    cpu_s: float = 0.0  # process CPU time (all threads) during the run: meaningful on a shared machine
    device_s: dict[str, float] = field(default_factory=lambda: defaultdict(float))  # backend-reported phases
    queue_max: dict[str, int] = field(default_factory=dict)
    queue_bound: dict[str, int] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, stage: str, seconds: float) -> None:
        with self._lock:
            self.stage_s[stage] = self.stage_s.get(stage, 0.0) + seconds

    def add_device(self, timings: dict[str, float]) -> None:
        with self._lock:
            for k, v in timings.items():
                self.device_s[k] += float(v)

    def seen_queue(self, name: str, size: int, bound: int) -> None:
        with self._lock:
            self.queue_bound[name] = bound
            if size > self.queue_max.get(name, 0):
                self.queue_max[name] = size

    @property
    def tiles_per_s(self) -> float:
        return self.tiles / self.wall_s if self.wall_s > 0 else 0.0

    @property
    def backend_wait_fraction(self) -> float:
        """Share of the backend loop's time spent waiting for input tiles (0 = the backend is the
        bottleneck)."""
        return self.backend_wait_input_s / self.backend_s if self.backend_s > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "tiles": self.tiles,
            "batches": self.batches,
            "wall_s": round(self.wall_s, 4),
            "cpu_s": round(self.cpu_s, 4),
            "cpu_ms_per_tile": round(1e3 * self.cpu_s / self.tiles, 2) if self.tiles else None,
            "tiles_per_s": round(self.tiles_per_s, 3),
            "stage_busy_s": {k: round(v, 4) for k, v in self.stage_s.items()},
            "backend_wait_input_s": round(self.backend_wait_input_s, 4),
            "backend_wait_output_s": round(self.backend_wait_output_s, 4),
            "backend_wait_fraction": round(self.backend_wait_fraction, 4),
            "device_s": {k: round(v, 4) for k, v in self.device_s.items()},
            "queue_max": dict(self.queue_max),
            "queue_bound": dict(self.queue_bound),
        }
