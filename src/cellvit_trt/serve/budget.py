"""The batch `serve` runs, from the memory budget: `run`'s plan (runtime/budget.py) over every slide the
server may hold at once.

The backend is one; the tiles alive are those of `max_slides` slide pipelines (`ServeSettings.tiles_in_memory`
each) and their post-processing threads. A slide's row buffers depend on its width, known only when it is
opened, and are bounded by `--max-open-rows` instead (docs/serve.md).
"""

from __future__ import annotations

from typing import Any

from cellvit_trt.runtime.budget import BatchPlan, Pipeline, plan_run_memory


def plan_serve_memory(backend: Any, settings: Any) -> BatchPlan:
    """The batch for `settings` (a `ServeSettings`) with `backend` opened but not active: the one asked for
    with `-b` if it fits, else the largest that fits up to the backend's preferred one; `BudgetError` if
    none does."""

    def pipeline_for(batch: int) -> Pipeline:
        per_slide = settings.tiles_in_memory(batch, backend.max_in_flight)
        return Pipeline(
            workers=settings.post_workers * settings.max_slides,
            tiles_queued=settings.max_slides * per_slide,
        )

    return plan_run_memory(backend, settings, pipeline_for)
