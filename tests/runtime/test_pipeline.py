"""The streaming pipeline: order, bounded queues under a slow stage, stage timings, failures and interrupts.

The backend here is a small real Backend (numpy compute, two batches in flight), not a stand-in of a library.
"""

from __future__ import annotations

import _thread
import signal
import threading
import time

import numpy as np
import pytest

from cellvit_trt.runtime.backends.base import Backend
from cellvit_trt.runtime.pipeline import Pipeline, PipelineError

T = 16


class NumpyBackend(Backend):
    kind = "numpy"
    max_in_flight = 2

    def __init__(self, max_batch=4, delay=0.0):
        super().__init__("numpy")
        self.max_batch, self.tile_size, self.delay = max_batch, T, delay
        self.output_names = ("fg", "hv", "type_map", "tissue_logits")

    def _activate(self):
        pass

    def _deactivate(self):
        pass

    def _infer(self, images):
        time.sleep(self.delay)
        n = len(images)
        return {
            "fg": (images[..., 0] > 0).astype(np.uint8),
            "hv": np.zeros((n, 2, T, T), np.float16),
            "type_map": images[..., 0].copy(),
            "tissue_logits": images[:, 0, 0, :2].astype(np.float32),
        }


def image_of(i: int) -> np.ndarray:
    return np.full((T, T, 3), i % 251, np.uint8)


class Live:
    """Counts tiles between read and sink: the memory a run holds."""

    def __init__(self):
        self.n, self.peak, self.lock = 0, 0, threading.Lock()

    def up(self):
        with self.lock:
            self.n += 1
            self.peak = max(self.peak, self.n)

    def down(self):
        with self.lock:
            self.n -= 1


def test_results_arrive_in_order_and_complete():
    out = []
    with NumpyBackend() as be:
        p = Pipeline(
            be,
            read=image_of,
            process=lambda i, m: int(m["type_map"][0, 0]),
            sink=lambda i, r: out.append((i, r)),
            batch=4,
            workers=3,
            readers=3,  # parallel reads, order kept
        )
        stats = p.run(range(37))
    assert out == [(i, i % 251) for i in range(37)]
    assert stats.tiles == 37 and stats.batches == 10
    assert stats.tiles_per_s > 0 and 0.0 <= stats.backend_wait_fraction <= 1.0
    assert set(stats.to_dict()["stage_busy_s"]) == {"read", "batch", "infer", "post", "sink"}


@pytest.mark.parametrize("slow", ["sink", "post"])
def test_slow_stage_keeps_queues_and_memory_bounded(slow):
    live = Live()

    def read(i):
        live.up()
        return image_of(i)

    def process(i, maps):
        if slow == "post":
            time.sleep(0.01)
        return maps["fg"].sum()

    def sink(i, r):
        if slow == "sink":
            time.sleep(0.01)
        live.down()

    n_tiles, batch, workers = 80, 4, 2
    with NumpyBackend(max_batch=batch) as be:
        p = Pipeline(be, read=read, process=process, sink=sink, batch=batch, workers=workers)
        stats = p.run(range(n_tiles))
    assert stats.tiles == n_tiles
    for name, peak in stats.queue_max.items():
        assert peak <= stats.queue_bound[name], (name, peak, stats.queue_bound)
    # read queue + the batch being gathered + in-flight batches + post queue + one tile in the sink
    bound = p.read_bound + 1 + batch * (p.in_flight + 1) + p.post_bound + 1
    assert live.peak <= bound < n_tiles / 2, (live.peak, bound)
    # the backend is blocked by the slow stage, not starved of input
    assert stats.backend_wait_output_s > stats.backend_wait_input_s


def test_slow_reader_shows_as_backend_waiting_for_input():
    def read(i):
        time.sleep(0.01)
        return image_of(i)

    with NumpyBackend() as be:
        stats = Pipeline(be, read=read, process=lambda i, m: 0, sink=lambda i, r: None, batch=4).run(
            range(24)
        )
    assert stats.backend_wait_fraction > 0.5, stats.to_dict()


def _no_pipeline_threads():
    deadline = time.time() + 5
    while time.time() < deadline:
        if not [t for t in threading.enumerate() if t.name.startswith("cvt-")]:
            return True
        time.sleep(0.05)
    return False


def test_post_process_error_names_the_tile_and_stops_early():
    read_count = []

    def read(i):
        read_count.append(i)
        return image_of(i)

    def process(i, maps):
        if i == 13:
            raise ValueError("boom")
        return i

    with (
        NumpyBackend() as be,
        pytest.raises(PipelineError, match="post-process failed on tile 13: boom") as ei,
    ):
        Pipeline(be, read=read, process=process, sink=lambda i, r: None, batch=4).run(range(10_000))
    assert ei.value.stage == "post-process" and ei.value.tile == 13
    assert isinstance(ei.value.__cause__, ValueError)
    assert len(read_count) < 200
    assert _no_pipeline_threads()


def test_read_error_names_the_tile():
    def read(i):
        if i == 5:
            raise OSError("truncated JPEG tile")
        return image_of(i)

    with NumpyBackend() as be, pytest.raises(PipelineError, match="read failed on tile 5: truncated"):
        Pipeline(be, read=read, process=lambda i, m: i, sink=lambda i, r: None, batch=2).run(range(50))
    assert _no_pipeline_threads()


def test_sink_error_and_backend_error_are_reported():
    def sink(i, r):
        if i == 7:
            raise RuntimeError("disk full")

    with NumpyBackend() as be, pytest.raises(PipelineError, match="merge/write failed on tile 7"):
        Pipeline(be, read=image_of, process=lambda i, m: i, sink=sink, batch=2).run(range(50))

    def bad_read(i):
        return np.zeros((T + 1, T, 3), np.uint8) if i == 3 else image_of(i)

    with (
        NumpyBackend() as be,
        pytest.raises(PipelineError, match=r"read failed on tile 3: got a tile uint8\[17, 16, 3\]"),
    ):
        Pipeline(be, read=bad_read, process=lambda i, m: i, sink=lambda i, r: None, batch=2).run(range(50))
    assert _no_pipeline_threads()


def test_keyboard_interrupt_stops_all_threads():
    def sink(i, r):
        if i == 10:
            _thread.interrupt_main()
        time.sleep(0.002)

    # Ctrl-C as in a terminal: an xdist worker or a background shell may ignore SIGINT, and interrupt_main()
    # raises KeyboardInterrupt only under Python's default handler
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with NumpyBackend() as be, pytest.raises(KeyboardInterrupt):
            Pipeline(be, read=image_of, process=lambda i, m: i, sink=sink, batch=2).run(range(100_000))
    finally:
        signal.signal(signal.SIGINT, previous)
    assert _no_pipeline_threads()


class FailingBackend(NumpyBackend):
    def _infer(self, images):
        if (images[:, 0, 0, 0] == 6).any():
            raise RuntimeError("device lost")
        return super()._infer(images)


def test_backend_error_names_the_tiles_of_the_batch():
    with (
        FailingBackend() as be,
        pytest.raises(PipelineError, match=r"infer failed on tile 4, 5, 6, 7: device lost"),
    ):
        Pipeline(be, read=image_of, process=lambda i, m: i, sink=lambda i, r: None, batch=4).run(range(40))
    assert _no_pipeline_threads()


def test_progress_line_and_quiet_mode():
    import io

    from cellvit_trt.runtime.progress import Progress

    buf = io.StringIO()
    bar = Progress(10, desc="slide", stream=buf, enabled=True, min_interval_s=0.0)
    for _ in range(4):
        bar(1)
    bar.close()
    text = buf.getvalue()
    assert "slide 4/10 [ 40.0%]" in text and "tiles/s" in text and "ETA" in text and text.endswith("\n")
    quiet = io.StringIO()
    q = Progress(10, stream=quiet, enabled=False)
    q(5)
    q.close()
    assert quiet.getvalue() == ""


class InterruptedBackend(NumpyBackend):
    def _infer(self, images):
        if (images[:, 0, 0, 0] == 6).any():
            raise KeyboardInterrupt  # Ctrl-C / SIGTERM arrive in the main thread, which runs the backend
        return super()._infer(images)


def test_interrupt_during_inference_is_an_interrupt_not_a_tile_error():
    with InterruptedBackend() as be, pytest.raises(KeyboardInterrupt):
        Pipeline(be, read=image_of, process=lambda i, m: i, sink=lambda i, r: None, batch=4).run(range(40))
    assert _no_pipeline_threads()


def test_a_slow_live_source_gets_each_tile_back_without_waiting_for_a_full_batch():
    """Scanner mode (`batch_wait_s`): a tile that arrives alone is inferred after a short wait, not held until
    three more arrive; a file source (None) fills its batches."""

    def slow_specs(sunk: list, seen_before: list):
        for i in range(4):
            yield i
            time.sleep(0.4)  # a scanner's pace: the next tile comes later
            seen_before.append(len(sunk))

    for wait, expect_early in ((0.05, True), (None, False)):
        sunk: list = []
        seen: list = []
        with NumpyBackend(max_batch=4) as be:
            Pipeline(
                be,
                read=image_of,
                process=lambda i, maps: i,
                sink=lambda i, r, sunk=sunk: sunk.append(i),
                batch=4,
                workers=1,
                batch_wait_s=wait,
            ).run(slow_specs(sunk, seen))
        assert sunk == [0, 1, 2, 3]
        assert (seen[0] >= 1) is expect_early, (wait, seen)  # tile 0 was out before tile 1 was even read
