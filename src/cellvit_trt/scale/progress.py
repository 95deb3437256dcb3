"""The whole job's progress on the terminal: slides done/running/failed, tiles/s across the cluster, ETA.

    bar = JobProgress(total_slides)
    bar.update(done=3, running=2, failed=1, tiles=1840, tiles_per_slide=410.0, busy_tiles=120)
    bar.close()

On a terminal the line is redrawn in place (at most every `min_interval_s`); elsewhere (CI, logs, nohup) one
INFO log line every `log_interval_s`. The rate is over a sliding window, so it follows workers that join or
die; the ETA is the tiles still to do (slides not finished times the mean tiles of a finished slide, less
what running slides already did) at that rate, "?" until a slide has finished.
"""

from __future__ import annotations

import logging
import sys
import time
from collections import deque
from collections.abc import Callable
from typing import TextIO

from cellvit_trt.runtime.progress import clock

log = logging.getLogger("cellvit_trt.progress")

WINDOW_S = 20.0


class JobProgress:
    def __init__(
        self,
        total: int,
        stream: TextIO | None = None,
        enabled: bool | None = None,
        min_interval_s: float = 0.5,
        log_interval_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.total = int(total)
        self.clock = clock
        self.stream = stream or sys.stderr
        self.enabled = self.stream.isatty() if enabled is None else enabled
        self.min_interval_s, self.log_interval_s = min_interval_s, log_interval_s
        self._samples: deque[tuple[float, int]] = deque()
        self._last_draw = self._last_log = clock()
        self.text = ""

    def rate(self, tiles: int, now: float) -> float:
        """Tiles per second over the last WINDOW_S seconds of samples."""
        self._samples.append((now, tiles))
        while len(self._samples) > 2 and now - self._samples[0][0] > WINDOW_S:
            self._samples.popleft()
        (t0, n0), (t1, n1) = self._samples[0], self._samples[-1]
        return (n1 - n0) / (t1 - t0) if t1 > t0 else 0.0

    def line(
        self, done: int, running: int, failed: int, tiles_per_s: float, eta_s: float | None, workers: int
    ) -> str:
        eta = clock(eta_s) if eta_s is not None else "?"
        return (
            f"slides {done}/{self.total} done, {running} running, {failed} failed | {workers} workers | "
            f"{tiles_per_s:7.2f} tiles/s | ETA {eta}"
        )

    def update(
        self,
        done: int,
        running: int,
        failed: int,
        tiles: int,
        tiles_per_slide: float | None,
        busy_tiles: int,
        workers: int,
    ) -> None:
        now = self.clock()
        rate = self.rate(tiles, now)
        eta = None
        if tiles_per_slide is not None and rate > 0:
            left = (self.total - done - failed) * tiles_per_slide - busy_tiles
            eta = max(0.0, left) / rate
        self.text = self.line(done, running, failed, rate, eta, workers)
        if self.enabled:
            if now - self._last_draw >= self.min_interval_s:
                self._last_draw = now
                self.stream.write("\r" + self.text + "\x1b[K")
                self.stream.flush()
        elif now - self._last_log >= self.log_interval_s:
            self._last_log = now
            log.info("%s", self.text)

    def clear(self) -> None:
        """Before a line of its own (a slide's result) is printed on the terminal."""
        if self.enabled and self.text:
            self.stream.write("\r\x1b[K")
            self.stream.flush()
            self._last_draw = 0.0

    def close(self) -> None:
        if self.enabled and self.text:
            self.stream.write("\r" + self.text + "\x1b[K\n")
            self.stream.flush()
