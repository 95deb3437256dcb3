"""A Ray worker: an actor that keeps one backend warm and runs one planned input at a time, exactly as
`cellvit-trt run` does on one machine (`batch.capture` around `batch.LocalExecutor`, i.e. `job.run_input`:
the same folder claim, atomic writers, journal and `.done.json`).

    Worker = worker_class()                                  # the Ray actor class
    w = Worker.options(num_cpus=4, num_gpus=1).remote(settings)
    ray.get(w.where.remote())                                # node, pid, GPU, backend (or the start-up error)
    outcome = ray.get(w.run.remote(item, attempt))           # a batch.Outcome, plain data

- Threads and post-processing scale with what Ray gave the actor: `workers` (post-processing pool) and
  `threads` (ONNX Runtime / PyTorch intra-op) default to its CPUs, not the node's; a GPU actor sees only its
  GPU (Ray sets CUDA_VISIBLE_DEVICES), so it opens device 0.
- The backend (and so an exported graph or TensorRT engine, from the cache on shared storage, built once under
  the cache's file lock) is opened once per actor, in `__init__`, and reused for every slide it runs.
- A retry (`attempt > 1`: the previous worker died mid-slide) resumes the slide's journal, as `--resume` does,
  when the journal was written with this worker's model and settings; otherwise it starts the slide over.
- `stop()` (another concurrency group, so it runs while `run` works) makes the next batch submission raise
  KeyboardInterrupt in the slide's pipeline: the job commits its journal and removes its partial files as on
  Ctrl-C, and `run` returns an `interrupted` outcome.

Fault injection for tests: `CELLVIT_TRT_FAULT_STALL=<output name>:<K>` holds the first attempt of that input
after K tiles were inferred (the journal keeps committing what was post-processed) until the worker is killed
or stopped.
"""

from __future__ import annotations

import dataclasses
import json
import os
import socket
import threading
import time
from typing import Any

import ray

from cellvit_trt.runtime.batch import LocalExecutor, Outcome, capture, failure_message
from cellvit_trt.runtime.inputs import PlannedInput
from cellvit_trt.runtime.outdir import RESUME_DIR

STALL_ENV = "CELLVIT_TRT_FAULT_STALL"


class Tally:
    """The actor's backend, counting tiles inferred (the job's tiles/s) and honouring the driver's stop."""

    def __init__(self, backend: Any) -> None:
        self._backend = backend
        self.tiles = 0
        self.stop = threading.Event()
        self.stall_after: int | None = None

    def __getattr__(self, name: str) -> Any:  # everything else is the backend's
        return getattr(self._backend, name)

    def submit(self, images: Any) -> Any:
        if self.stall_after is not None and self.tiles >= self.stall_after:
            self.stop.wait()  # test hook: held here until killed or stopped
        if self.stop.is_set():
            raise KeyboardInterrupt  # the pipeline stops its stages, the job commits its journal
        return self._backend.submit(images)

    def result(self, handle: Any) -> dict[str, Any]:
        maps = self._backend.result(handle)
        self.tiles += len(maps["fg"])
        return maps


def _stall_for(item: PlannedInput, attempt: int) -> int | None:
    name, _, tiles = os.environ.get(STALL_ENV, "").rpartition(":")
    return int(tiles) if attempt == 1 and name == item.name and tiles.isdigit() else None


class SlideWorker:
    def __init__(self, settings: Any) -> None:
        self.tally: Tally | None = None
        self.current: int | None = None
        self.memory_plan: dict[str, Any] | None = None
        ctx = ray.get_runtime_context()
        cpus = float(ctx.get_assigned_resources().get("CPU", 0.0))
        gpus = [str(g) for g in ray.get_gpu_ids()]
        n = max(1, int(cpus))
        self.settings = dataclasses.replace(
            settings,
            workers=settings.workers or n,
            threads=settings.threads or n,
            device=0 if gpus else settings.device,
        )
        self.info: dict[str, Any] = {
            "node": ray.util.get_node_ip_address(),
            "node_id": ctx.get_node_id(),
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "cpus": cpus,
            "gpus": gpus,
        }
        t0 = time.perf_counter()
        try:
            from cellvit_trt.runtime.backends import check_outputs, open_run_backend
            from cellvit_trt.runtime.budget import plan_run_memory

            backend = open_run_backend(self.settings)
            # this worker's node and share of it: the batch fits the memory here, not the driver's
            plan = plan_run_memory(backend, self.settings)
            self.memory_plan = plan.to_dict()
            self.settings = dataclasses.replace(self.settings, batch=plan.batch)
            backend.activate()
            check_outputs(backend, self.settings.outputs, self.settings.model)
        except Exception as exc:  # reported by where(): the driver stops this worker, not the job's slides
            self.info["error"] = failure_message(self.settings.model, exc)
            return
        desc = backend.describe()
        self.info.update(backend=desc.get("backend"), device=desc.get("device"))
        self.info["start_s"] = round(time.perf_counter() - t0, 3)
        self.tally = Tally(backend)

    @ray.method(concurrency_group="control")
    def where(self) -> dict[str, Any]:
        return self.info

    @ray.method(concurrency_group="control")
    def status(self) -> dict[str, Any]:
        return {"tiles": self.tally.tiles if self.tally else 0, "item": self.current, "pid": os.getpid()}

    @ray.method(concurrency_group="control")
    def stop(self) -> None:
        if self.tally is not None:
            self.tally.stop.set()

    def run(self, item: PlannedInput, attempt: int = 1) -> Outcome:
        if self.tally is None:
            return Outcome("failed", error=self.info.get("error"))
        self.current = item.index
        self.tally.stall_after = _stall_for(item, attempt)
        settings, notes = self._settings_for(item, attempt)
        t0 = time.perf_counter()
        try:
            outcome = capture(
                item,
                lambda: LocalExecutor(settings, self.tally, progress=False, memory_plan=self.memory_plan)(
                    item
                ),
            )
        except KeyboardInterrupt:
            outcome = Outcome(
                "interrupted", seconds=round(time.perf_counter() - t0, 3), error=f"{item.path}: interrupted"
            )
        finally:
            self.current = None
            self.tally.stall_after = None
        if outcome.status == "skipped" and not self.settings.resume:
            # the attempt before finished the slide and died before it could report: its results stand
            outcome = dataclasses.replace(outcome, status="ok")
            notes.append(
                f"{item.path}: completed by attempt {attempt - 1}, whose worker died before reporting"
            )
        outcome.warnings[:0] = notes
        return outcome

    def _settings_for(self, item: PlannedInput, attempt: int) -> tuple[Any, list[str]]:
        """A retry resumes the dead worker's journal when it fits this worker's model and settings."""
        if attempt == 1 or self.settings.resume:
            return self.settings, []
        from cellvit_trt.runtime.job import fingerprint

        manifest = item.out_dir / RESUME_DIR / "manifest.json"
        try:
            written = json.loads(manifest.read_text()).get("fingerprint")
        except (OSError, ValueError, AttributeError):
            return dataclasses.replace(self.settings, resume=True), []  # no journal: resume finds nothing
        ours = fingerprint(item.path, self.tally, self.settings, self.tally.tile_size, item.digest)
        if written == ours:
            return dataclasses.replace(self.settings, resume=True), []
        differ = sorted(k for k in set(written or {}) | set(ours) if (written or {}).get(k) != ours.get(k))
        return self.settings, [
            f"{item.path}: retried on {self.info['node']} with another {', '.join(differ[:3])} than the "
            "worker that died; the slide was started over"
        ]


def worker_class(max_restarts: int = -1) -> Any:
    """The actor class. Restarts are Ray's (a dead worker comes back, on any node, with a fresh backend);
    task retries are the driver's, so that a retried slide can go to another worker and resume."""
    return ray.remote(
        concurrency_groups={"control": 2},
        max_restarts=max_restarts,
        max_task_retries=0,
    )(SlideWorker)
