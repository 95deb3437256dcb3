"""The driver of `cellvit-trt run --ray`: the local run's plan, run on a pool of Ray workers.

    record = run_on_ray(plan, settings, scale)      # plan = inputs.plan_inputs(specs, settings.output)

Everything a local run decides is decided the same way here: the plan (inputs, formats, output folders) comes
from `runtime.inputs`; each worker runs `job.run_input` through `batch.capture` (same folder claim, atomic
outputs, journal, per-input error message); outcomes go into the same `run.json` (`scale.record`); the exit
code follows `record.failed`. What Ray adds is where and how often:

- one worker (actor) per slot, `placement` resources each; a slot whose worker dies is restarted by Ray (on
  any node) and gets a fresh backend;
- a slide whose worker died is queued again at the front (`attempt + 1`, preferably for another slot) and
  continues from its journal; after `retries` such deaths it fails with a message saying so;
- a slide that fails by itself (corrupt file, no mpp) is a failed outcome with the local run's message; the
  job goes on;
- Ctrl-C (or SIGTERM): running slides are asked to stop (their journal is committed, partial files removed),
  waited for up to `stop_timeout_s`, then killed; finished slides stay; the queue stays `pending` in run.json;
  a rerun with `--resume` skips what is complete and resumes the rest.
"""

from __future__ import annotations

import dataclasses
import logging
import signal
import sys
import time
from collections import deque
from pathlib import Path
from typing import Any

from cellvit_trt.config import to_dict
from cellvit_trt.errors import CellViTTRTError
from cellvit_trt.runtime.batch import Outcome, capture, report
from cellvit_trt.runtime.inputs import Plan, PlannedInput
from cellvit_trt.scale.cluster import connect, place, require_ray
from cellvit_trt.scale.progress import JobProgress
from cellvit_trt.scale.record import JobRecord

log = logging.getLogger(__name__)

POLL_S = 0.5  # driver loop: results are handled at once, progress is refreshed at this interval
STATUS_S = 1.0  # how often busy workers are asked for their tile count
PROBE_S = 1.0  # how often a restarting worker is asked whether it is back
RESTART_TIMEOUT_S = 600.0  # a worker not back after this long (a crash loop while starting) is given up


@dataclasses.dataclass
class Task:
    item: PlannedInput  # absolute paths: what a worker on any node gets
    attempt: int = 1
    last_slot: int | None = None


@dataclasses.dataclass
class Slot:
    index: int
    actor: Any
    info: dict[str, Any] | None = None  # the worker's where(); None while it starts or restarts
    task: Task | None = None
    tiles: int = 0  # tiles inferred by the current incarnation
    tiles_before: int = 0  # by earlier incarnations (a restarted worker counts from 0)
    tiles_at_task: int = 0
    deaths: int = 0  # in a row, without a finished slide in between
    dead: bool = False
    polled: float = 0.0
    down_since: float | None = None  # when it died (it is restarting)
    probe_at: float | None = None  # when to ask again whether it is back


def _absolute(item: PlannedInput) -> PlannedInput:
    return dataclasses.replace(item, path=Path(item.path).absolute(), out_dir=Path(item.out_dir).absolute())


def worker_settings(settings: Any) -> Any:
    """The settings as every node must see them: absolute paths (a worker's working folder is not ours)."""
    model = settings.model
    if Path(str(model)).exists():
        model = str(Path(str(model)).absolute())
    return dataclasses.replace(
        settings,
        model=model,
        output=Path(settings.output).absolute(),
        cache_dir=Path(settings.cache_dir).absolute() if settings.cache_dir else None,
        trusted_keys=Path(settings.trusted_keys).absolute() if settings.trusted_keys else None,
    )


class Dispatcher:
    def __init__(
        self, ray: Any, plan: Plan, settings: Any, scale: Any, record: JobRecord, placement: Any, quiet: bool
    ) -> None:
        from cellvit_trt.scale.worker import worker_class

        self.ray, self.plan, self.scale, self.record, self.quiet = ray, plan, scale, record, quiet
        self.items = {i.index: i for i in plan.items}
        self.tasks: deque[Task] = deque(Task(_absolute(i)) for i in plan.items if i.error is None)
        self.unplanned = [i for i in plan.items if i.error is not None]
        options = placement.actor_options()
        worker = worker_class()
        remote_settings = worker_settings(settings)
        self.slots = [
            Slot(k, worker.options(**options).remote(remote_settings)) for k in range(placement.workers)
        ]
        self.refs: dict[Any, tuple[str, Slot]] = {}
        for slot in self.slots:
            self.refs[slot.actor.where.remote()] = ("where", slot)
        self.progress = JobProgress(len(plan.items), enabled=False if quiet else None)
        self.unavailable = getattr(ray.exceptions, "ActorUnavailableError", ())
        self.stopping = False
        self.t0 = time.monotonic()
        self.ready_once = False
        self.start_errors: list[str] = []

    # ---- the loop ---------------------------------------------------------------------------------------
    def run(self) -> None:
        try:
            while self.tasks or any(s.task for s in self.slots):
                if not any(not s.dead for s in self.slots):
                    self._no_workers_left()
                    break
                self._dispatch()
                self._step()
                self._poll()
                self._show()
            self._record_unplanned()
        except KeyboardInterrupt:
            self._interrupt()
            raise
        finally:
            self.progress.close()
        self._totals()
        self.record.close("done")

    def _step(self) -> None:
        refs = list(self.refs)
        if not refs:
            time.sleep(POLL_S)
            return
        ready, _ = self.ray.wait(refs, num_returns=1, timeout=POLL_S)
        if ready:
            ready, _ = self.ray.wait(refs, num_returns=len(refs), timeout=0)
        for ref in ready:
            # Popped only once handled: a Ctrl-C inside a handler (ray.get can block) leaves the result to
            # `_interrupt`, which handles it again instead of losing a finished slide's outcome.
            kind, slot = self.refs[ref]
            getattr(self, f"_on_{kind}")(slot, ref)
            self.refs.pop(ref, None)

    def _dispatch(self) -> None:
        for slot in self.slots:
            if not self.tasks:
                return
            if slot.dead or slot.info is None or slot.task is not None:
                continue
            task = next((t for t in self.tasks if t.last_slot != slot.index), self.tasks[0])
            self.tasks.remove(task)
            slot.task, slot.tiles_at_task = task, slot.tiles
            self.refs[slot.actor.run.remote(task.item, task.attempt)] = ("run", slot)
            self.record.start(task.item)
            self.record.place(task.item.index, slot.info, task.attempt)
            self.record.write()  # at once: run.json names the worker (node, PID) running each slide

    def _poll(self) -> None:
        """Tile counts of busy workers; whether restarting ones are back."""
        now = time.monotonic()
        asked = {(kind, id(s)) for kind, s in self.refs.values()}
        for slot in self.slots:
            if slot.dead:
                continue
            if slot.task is not None and slot.info is not None and ("status", id(slot)) not in asked:
                if now - slot.polled >= STATUS_S:
                    slot.polled = now
                    self.refs[slot.actor.status.remote()] = ("status", slot)
            if slot.probe_at is not None and now >= slot.probe_at and ("where", id(slot)) not in asked:
                slot.probe_at = None
                self.refs[slot.actor.where.remote()] = ("where", slot)

    # ---- results ----------------------------------------------------------------------------------------
    def _on_where(self, slot: Slot, ref: Any) -> None:
        try:
            info = self.ray.get(ref)
        except self.unavailable as exc:  # restarting: ask again, up to RESTART_TIMEOUT_S
            now = time.monotonic()
            slot.down_since = slot.down_since or now
            if now - slot.down_since > RESTART_TIMEOUT_S:
                self._give_up(slot, f"not back {RESTART_TIMEOUT_S:.0f} s after it died ({_first_line(exc)})")
            else:
                slot.probe_at = now + PROBE_S
            return
        except self.ray.exceptions.RayActorError as exc:  # dead for good (it cannot be restarted)
            self._give_up(slot, _first_line(exc))
            return
        if info.get("error"):
            slot.dead = True
            self.start_errors.append(info["error"])
            log.warning("--ray: a worker on %s could not start: %s", info.get("node"), info["error"])
            self.ray.kill(slot.actor, no_restart=True)
            return
        slot.info, slot.tiles, slot.down_since = info, 0, None
        self.record.executor.setdefault("workers", []).append(info)
        self.record.executor.setdefault("startup_s", round(time.monotonic() - self.t0, 3))
        self._record_unplanned()

    def _on_status(self, slot: Slot, ref: Any) -> None:
        try:
            slot.tiles = int(self.ray.get(ref)["tiles"])
        except self.ray.exceptions.RayError:
            pass  # the worker died: its run() result says so

    def _on_run(self, slot: Slot, ref: Any) -> None:
        task = slot.task
        if task is None:  # handled already, then interrupted before its ref was dropped (`_step`)
            return
        try:
            outcome = self.ray.get(ref)
        except self.ray.exceptions.RayActorError as exc:
            slot.task = None
            self._worker_died(slot, exc)
            if self.stopping:
                self._finish(
                    task, Outcome("interrupted", error=f"{self.items[task.item.index].path}: interrupted")
                )
            else:
                self._retry(task, slot, exc)
            return
        except self.ray.exceptions.RayError as exc:  # not the slide's own error (those are outcomes)
            outcome = Outcome("failed", error=f"{task.item.path}: {type(exc).__name__}: {_first_line(exc)}")
        slot.deaths = 0
        self._finish(task, outcome)  # idempotent: handled again after a Ctrl-C here, it records the same
        slot.task = None

    def _finish(self, task: Task, outcome: Outcome) -> None:
        item = self.items[task.item.index]
        self.record.finish(item, outcome)
        self.progress.clear()
        report(item, outcome, self.quiet)

    def _worker_died(self, slot: Slot, exc: BaseException) -> None:
        """Its run() failed: the process or its node is gone. Ray restarts it; `_poll` asks when it's back."""
        info = slot.info or {}
        slot.info, slot.tiles_before, slot.tiles = None, slot.tiles_before + slot.tiles, 0
        slot.deaths += 1
        if self.stopping:
            self._give_up(slot, "stopping")
        elif slot.deaths > self.scale.retries + 1:
            self._give_up(slot, f"died {slot.deaths} times in a row ({_first_line(exc)})")
        else:
            log.warning(
                "--ray: the worker with pid %s on %s died (%s); Ray restarts it",
                info.get("pid"),
                info.get("node"),
                _first_line(exc),
            )
            slot.down_since, slot.probe_at = time.monotonic(), time.monotonic() + PROBE_S

    def _give_up(self, slot: Slot, why: str) -> None:
        slot.dead, slot.info, slot.probe_at = True, None, None
        self.ray.kill(slot.actor, no_restart=True)
        if not self.stopping:
            self.start_errors.append(f"a worker {why}")
            log.warning("--ray: worker %d given up: %s", slot.index, why)

    def _retry(self, task: Task, slot: Slot, exc: BaseException) -> None:
        item = self.items[task.item.index]
        if task.attempt > self.scale.retries:
            self._finish(
                task,
                Outcome(
                    "failed",
                    error=f"{item.path}: its worker died {task.attempt} times while running it (last: "
                    f"{_first_line(exc)}); run it alone without --ray to see whether it crashes the reader",
                ),
            )
            return
        task.attempt, task.last_slot = task.attempt + 1, slot.index
        self.progress.clear()
        print(
            f"cellvit-trt run: warning: {item.path}: its worker died; retrying in another worker process "
            f"(attempt {task.attempt}), resuming from its journal",
            file=sys.stderr,
        )
        self.tasks.appendleft(task)

    # ---- the end ----------------------------------------------------------------------------------------
    def _record_unplanned(self) -> None:
        """Inputs that failed at planning: recorded once a worker is up (a job whose workers cannot start
        fails as a whole, as a local run whose backend cannot open writes no run.json)."""
        if self.ready_once:
            return
        self.ready_once = True
        for item in self.unplanned:
            self._finish(Task(item), capture(item, lambda: Outcome("failed")))

    def _no_workers_left(self) -> None:
        if not self.ready_once:
            first = self.start_errors[0] if self.start_errors else "every worker died while starting"
            raise CellViTTRTError(f"--ray: no worker could start: {first}")
        reason = self.start_errors[-1] if self.start_errors else "every worker died repeatedly"
        while self.tasks:
            task = self.tasks.popleft()
            self._finish(
                task, Outcome("failed", error=f"{task.item.path}: no Ray worker left to run it ({reason})")
            )

    def _interrupt(self) -> None:
        self.stopping = True
        busy = [s for s in self.slots if s.task is not None]
        for slot in busy:
            slot.actor.stop.remote()
        self.progress.clear()
        print(
            f"cellvit-trt run: interrupted: stopping {len(busy)} running slides (journals are kept; "
            f"Ctrl-C again to kill them now)",
            file=sys.stderr,
        )
        deadline = time.monotonic() + self.scale.stop_timeout_s
        try:
            while any(k == "run" for k, _ in self.refs.values()) and time.monotonic() < deadline:
                self._step()
        except KeyboardInterrupt:
            pass
        for kind, slot in list(self.refs.values()):
            if kind == "run" and slot.task is not None:
                self.ray.kill(slot.actor, no_restart=True)
                self._finish(
                    slot.task,
                    Outcome("interrupted", error=f"{self.items[slot.task.item.index].path}: interrupted"),
                )
                slot.task = None
        self._totals()
        self.record.close("interrupted")

    # ---- progress ---------------------------------------------------------------------------------------
    def _totals(self) -> None:
        """Tiles inferred by the job (finished slides, less resumed tiles) and the job's rate."""
        wall = time.monotonic() - self.t0
        tiles = sum(
            (o.tiles or 0) - (o.tiles_resumed or 0) for o in self.record.outcomes.values() if o.status == "ok"
        )
        self.record.executor.update(
            tiles_inferred=tiles, wall_s=round(wall, 3), tiles_per_s=round(tiles / wall, 3) if wall else None
        )

    def _tiles(self) -> int:
        return sum(s.tiles_before + s.tiles for s in self.slots)

    def _show(self) -> None:
        counts = self.record.counts()
        done = counts.get("ok", 0) + counts.get("skipped", 0)
        failed = counts.get("failed", 0) + counts.get("interrupted", 0)
        finished = [o.tiles for o in self.record.outcomes.values() if o.status == "ok" and o.tiles]
        busy = sum(max(0, s.tiles - s.tiles_at_task) for s in self.slots if s.task is not None)
        self.progress.update(
            done=done,
            running=counts.get("running", 0),
            failed=failed,
            tiles=self._tiles(),
            tiles_per_slide=sum(finished) / len(finished) if finished else None,
            busy_tiles=busy,
            workers=sum(s.info is not None for s in self.slots),
        )


def _first_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[0][:300] if lines else type(exc).__name__


def run_on_ray(plan: Plan, settings: Any, scale: Any, quiet: bool = False) -> JobRecord:
    """Run every planned input on Ray workers; the record (run.json) is closed on return or interrupt."""
    ray = require_ray()
    keep = signal.getsignal(signal.SIGTERM)
    t0 = time.monotonic()
    connect(ray, scale.address)
    connect_s = round(time.monotonic() - t0, 3)
    if keep is not None and threading_is_main():
        signal.signal(signal.SIGTERM, keep)  # Ray's driver handler exits; ours stops slides cleanly
    try:
        runnable = sum(i.error is None for i in plan.items)
        placement = place(settings, scale, ray.nodes(), runnable)
        record = JobRecord(
            plan,
            settings=to_dict(settings),
            executor={
                "kind": "ray",
                "address": scale.address,
                "ray_version": ray.__version__,
                "connect_s": connect_s,
                "placement": placement.to_dict(),
                "workers": [],
            },
        )
        Dispatcher(ray, plan, settings, scale, record, placement, quiet).run()
        return record
    finally:
        ray.shutdown()


def threading_is_main() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()
