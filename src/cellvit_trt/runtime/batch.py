"""Running a plan: every input through an executor, each outcome recorded in `<output>/run.json`.

    plan = inputs.plan_inputs(specs, output)
    record = RunRecord(plan, settings=to_dict(settings))
    run_batch(plan, LocalExecutor(settings, backend), record)     # sequential, in this process
    exit_code = 1 if record.failed else 0

The executor is the seam: `execute(item: PlannedInput) -> Outcome`. `LocalExecutor` runs `job.run_input` with
the caller's active backend. A scale-out runner (Ray) reuses the rest unchanged: it plans on the driver
(`plan_inputs`), runs `capture(item, lambda: outcome_of(run_input(...)))` on a worker (the job claims the
item's folder, writes it atomically, resumes from its journal), and calls `record.start(item)` /
`record.finish(item, outcome)` on the driver in whatever order results arrive. `Outcome` and
`PlannedInput.to_dict()` are plain data (picklable, JSON-ready).

Failures: any Exception while running one input becomes that input's `failed` outcome with a one-line message
naming the file (the traceback goes to the debug log); the other inputs go on. KeyboardInterrupt (and
SIGTERM in the CLI) stops the batch: the running input is recorded as `interrupted`, the rest stay
`pending`, run.json is written, and the interrupt propagates (exit 130).

run.json (format `cellvit-trt-run/1`, rewritten atomically as inputs finish, at most every 2 s, and at the
end): status (`running`, `done`, `interrupted`), start/end times, counts per status, `failed`, one entry per
input (input, given, format, output folder and how its name was derived, status, ok, cells, tiles,
tiles_resumed, seconds, error, warnings), `ignored` (what folders and globs held that is not an input, with
the reason), and the effective settings.
"""

from __future__ import annotations

import dataclasses
import datetime
import logging
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cellvit_trt import __version__
from cellvit_trt.errors import CellViTTRTError
from cellvit_trt.io import remove_orphans, write_json
from cellvit_trt.runtime.inputs import Plan, PlannedInput

log = logging.getLogger(__name__)

RUN_FORMAT = "cellvit-trt-run/1"
RUN_FILE = "run.json"
MAX_MESSAGE = 1000
WRITE_INTERVAL_S = 2.0


@dataclasses.dataclass
class Outcome:
    status: str  # "ok", "skipped" (--resume: already complete), "failed", "interrupted", "pending"
    cells: int | None = None
    tiles: int | None = None
    tiles_resumed: int | None = None
    seconds: float | None = None
    tiles_decode_errors: int | None = None
    error: str | None = None
    warnings: list[str] = dataclasses.field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["ok"] = None if self.status in ("pending", "running") else self.status in ("ok", "skipped")
        return d


Executor = Callable[[PlannedInput], Outcome]


def failure_message(path: Path, exc: BaseException) -> str:
    """One line naming the file: the package's own errors as they are, others with their type."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    text = lines[0] if lines else ""
    if not isinstance(exc, CellViTTRTError):
        text = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    if str(path) not in text and Path(path).name not in text:
        text = f"{path}: {text}"
    return text if len(text) <= MAX_MESSAGE else text[: MAX_MESSAGE - 3] + "..."


def capture(item: PlannedInput, fn: Callable[[], Outcome]) -> Outcome:
    """Run one input; any Exception becomes its failed Outcome. KeyboardInterrupt/SystemExit propagate."""
    if item.error is not None:
        return Outcome("failed", error=item.error)
    t0 = time.perf_counter()
    try:
        return fn()
    except Exception as exc:
        log.debug("%s failed", item.path, exc_info=exc)
        return Outcome(
            "failed", seconds=round(time.perf_counter() - t0, 3), error=failure_message(item.path, exc)
        )


def outcome_of(result: Any) -> Outcome:
    """A `job.JobResult` as an Outcome."""
    summary = result.summary or {}
    return Outcome(
        "skipped" if result.skipped else "ok",
        cells=int(result.cells),
        tiles=int(result.tiles_processed + result.tiles_resumed)
        if not result.skipped
        else int(result.tiles_planned),
        tiles_resumed=int(result.tiles_resumed),
        seconds=round(float(summary.get("elapsed_s", result.stats.wall_s)), 3),
        tiles_decode_errors=summary.get("tiles_decode_errors"),
        warnings=list(summary.get("warnings", [])),
    )


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


class RunRecord:
    """The run's `run.json`: the plan and every input's outcome, written atomically."""

    def __init__(self, plan: Plan, settings: dict[str, Any] | None = None, path: Path | None = None) -> None:
        self.plan = plan
        self.path = Path(path) if path is not None else plan.output / RUN_FILE
        self.settings = settings or {}
        self.outcomes: dict[int, Outcome] = {i.index: Outcome("pending") for i in plan.items}
        self.status = "running"
        self.started, self.finished = _now(), None
        self._last_write = 0.0

    @property
    def failed(self) -> int:
        return sum(o.status in ("failed", "interrupted") for o in self.outcomes.values())

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for o in self.outcomes.values():
            out[o.status] = out.get(o.status, 0) + 1
        return out

    def start(self, item: PlannedInput) -> None:
        self.outcomes[item.index] = Outcome("running")

    def finish(self, item: PlannedInput, outcome: Outcome) -> None:
        self.outcomes[item.index] = outcome
        self.write(force=False)

    def close(self, status: str = "done") -> None:
        self.status, self.finished = status, _now()
        self.write(force=True)

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": RUN_FORMAT,
            "status": self.status,
            "started": self.started,
            "finished": self.finished,
            "package_version": __version__,
            "output": str(self.plan.output),
            "counts": self.counts(),
            "failed": self.failed,
            "inputs": [{**i.to_dict(), **self.outcomes[i.index].to_dict()} for i in self.plan.items],
            "ignored": [dataclasses.asdict(g) for g in self.plan.ignored],
            "settings": self.settings,
        }

    def write(self, force: bool = True) -> None:
        if not force and time.monotonic() - self._last_write < WRITE_INTERVAL_S:
            return
        if not self._last_write:  # a killed earlier run's temp file; a live one is younger than a minute
            remove_orphans(self.path.parent, {self.path.name}, min_age_s=60.0)
        write_json(self.path, self.to_dict())
        self._last_write = time.monotonic()


def describe(item: PlannedInput, o: Outcome) -> str:
    if o.status == "skipped":
        return f"{item.path}: already complete in {item.out_dir} ({o.cells} cells); skipped (--resume)"
    return (
        f"{item.path}: {o.cells} cells, {o.tiles} tiles ({o.tiles_resumed} resumed) in {o.seconds} s "
        f"-> {item.out_dir}"
    )


def run_batch(plan: Plan, execute: Executor, record: RunRecord, quiet: bool = False) -> RunRecord:
    """Every planned input through `execute`, in order; outcomes into `record` (see the module doc)."""
    record.write()
    for item in plan.items:
        record.start(item)
        try:
            outcome = capture(item, lambda item=item: execute(item))
        except BaseException:
            record.outcomes[item.index] = Outcome("interrupted", error=f"{item.path}: interrupted")
            record.close("interrupted")
            raise
        record.finish(item, outcome)
        report(item, outcome, quiet)
    record.close("done")
    return record


def report(item: PlannedInput, outcome: Outcome, quiet: bool = False) -> None:
    """One input's result on the terminal: errors and warnings on stderr, the rest unless `quiet`."""
    if outcome.status == "failed":
        print(f"cellvit-trt run: error: {outcome.error}", file=sys.stderr)
    elif outcome.status == "interrupted":
        print(f"cellvit-trt run: {outcome.error or f'{item.path}: interrupted'}", file=sys.stderr)
    elif not quiet:
        print(describe(item, outcome))
    for w in outcome.warnings:
        print(f"cellvit-trt run: warning: {w}", file=sys.stderr)


class LocalExecutor:
    """Run each input with `job.run_input` on an active backend, in this process."""

    def __init__(
        self,
        settings: Any,
        backend: Any,
        progress: bool | None = None,
        memory_plan: dict[str, Any] | None = None,
    ) -> None:
        self.settings, self.backend, self.progress = settings, backend, progress
        self.memory_plan = memory_plan  # the batch choice (runtime/budget.py), for summary.json

    def __call__(self, item: PlannedInput) -> Outcome:
        from cellvit_trt.runtime.job import run_input

        result = run_input(
            item.path,
            self.settings,
            self.backend,
            out_dir=item.out_dir,
            progress=self.progress,
            digest=item.digest,
            memory_plan=self.memory_plan,
        )
        return outcome_of(result)
