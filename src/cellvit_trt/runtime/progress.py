"""A small progress bar (tiles, tiles/s, ETA) on stderr; silent when stderr is not a terminal.

Not a TTY (CI, logs, nohup): one INFO log line per 10 % instead of carriage-return redraws.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from typing import TextIO

log = logging.getLogger("cellvit_trt.progress")


def clock(seconds: float) -> str:
    if seconds != seconds or seconds == float("inf"):
        return "?"
    s = int(seconds)
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


class Progress:
    def __init__(
        self,
        total: int,
        desc: str = "tiles",
        stream: TextIO | None = None,
        enabled: bool | None = None,
        min_interval_s: float = 0.2,
        initial: int = 0,
    ):
        self.total, self.desc = int(total), desc
        self.stream = stream or sys.stderr
        self.enabled = self.stream.isatty() if enabled is None else enabled
        self.min_interval_s = min_interval_s
        self.n = self.initial = int(initial)
        self._t0 = time.perf_counter()
        self._last = 0.0
        self._next_log = 0.1
        self._lock = threading.Lock()

    def rate(self) -> float:
        dt = time.perf_counter() - self._t0
        return (self.n - self.initial) / dt if dt > 0 else 0.0

    def line(self) -> str:
        rate = self.rate()
        left = self.total - self.n
        eta = left / rate if rate > 0 else float("inf")
        pct = 100.0 * self.n / self.total if self.total else 100.0
        return f"{self.desc} {self.n}/{self.total} [{pct:5.1f}%] {rate:6.2f} tiles/s ETA {clock(eta)}"

    def __call__(self, k: int = 1) -> None:
        self.update(k)

    def update(self, k: int = 1) -> None:
        with self._lock:
            self.n += k
            now = time.perf_counter()
            if self.enabled:
                if now - self._last >= self.min_interval_s or self.n >= self.total:
                    self._last = now
                    self.stream.write("\r" + self.line())
                    self.stream.flush()
            elif self.total and self.n / self.total >= self._next_log:
                self._next_log = (int(10 * self.n / self.total) + 1) / 10
                log.info("%s", self.line())

    def close(self) -> None:
        if self.enabled:
            self.stream.write("\r" + self.line() + "\n")
            self.stream.flush()
