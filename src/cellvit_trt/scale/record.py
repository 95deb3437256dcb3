"""`run.json` of a Ray job: the local run's record (`batch.RunRecord`, format `cellvit-trt-run/1`) plus where
each input ran. One file and one schema for both executors, so tools that read a local run read a cluster
job too; the Ray form only adds keys:

- `executor`: {"kind": "ray", "address", "ray_version", "placement": {cpus, gpus per slide, workers, ...},
  "workers": [node, host, pid, cpus, GPUs, backend, device, start_s of each worker as it started],
  "connect_s" (ray.init), "startup_s" (until the first worker was ready), "wall_s" (the dispatch, start-up
  included), "tiles_inferred" and "tiles_per_s" (tiles the job inferred, resumed ones not counted)};
- per input, `worker`: {"node", "host", "pid", "gpus", "device", "attempts"} of the attempt that produced
  the outcome (or is running it: the driver rewrites the file when a slide starts, so the PID of the worker
  running a slide can be read there).
"""

from __future__ import annotations

from typing import Any

from cellvit_trt.runtime.batch import RunRecord
from cellvit_trt.runtime.inputs import Plan

WORKER_KEYS = ("node", "host", "pid", "gpus", "device")


class JobRecord(RunRecord):
    def __init__(self, plan: Plan, settings: dict[str, Any], executor: dict[str, Any]) -> None:
        super().__init__(plan, settings=settings)
        self.executor = executor
        self.placed: dict[int, dict[str, Any]] = {}

    def place(self, index: int, worker: dict[str, Any], attempt: int) -> None:
        self.placed[index] = {**{k: worker.get(k) for k in WORKER_KEYS}, "attempts": attempt}

    def to_dict(self) -> dict[str, Any]:
        d = super().to_dict()
        d["executor"] = self.executor
        for entry, item in zip(d["inputs"], self.plan.items, strict=True):
            entry["worker"] = self.placed.get(item.index)
        return d
