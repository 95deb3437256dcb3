"""Scale-out: many slides over many GPUs and machines with Ray (`cellvit-trt run SLIDES... --ray [ADDRESS]`).

Ray is an optional extra (`pip install 'cellvit-trt[ray]'`) that only this subpackage imports, and only
when `--ray` is given: `import cellvit_trt`, `cellvit-trt run` without `--ray` and `scale.settings` never
import it.

- `settings`: the `--ray*` options (light).
- `cluster`: the real `ray` module, the connection, placement by resources (one GPU per slide on GPU
  backends, `--ray-cpus-per-slide` CPUs).
- `worker`: the actor that keeps a backend warm and runs `job.run_input` per slide.
- `runner`: the driver: the local run's plan dispatched to the workers, retries after a worker's death
  (resuming the slide's journal), Ctrl-C, progress; `record`: run.json with where each slide ran.

See docs/scale-out.md.
"""

from __future__ import annotations

from typing import Any


def run_on_ray(plan: Any, settings: Any, scale: Any, quiet: bool = False) -> Any:
    """`runner.run_on_ray` (imported on use: it imports Ray)."""
    from cellvit_trt.scale.runner import run_on_ray as run

    return run(plan, settings, scale, quiet=quiet)
