"""A small CPU trainer for CellViT on synthetic tiles (upstream losses, AdamW, seeded).

Two phases: most steps on small crops (cheap; many nuclei per second of CPU), then a few steps on full tiles
of the model's native size so the pos-embed is also trained without interpolation. The learning rate follows a
linear warm-up and a cosine decay. Progress is `step / total steps`; with `max_minutes` it is the larger of
that and the elapsed fraction of the budget, so on a slow or shared CPU the run still anneals, switches phase
and saves on time (then the number of steps depends on the machine; the checkpoint records it).
"""

from __future__ import annotations

import logging
import math
import queue
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from cellvit_trt.errors import ConfigError
from cellvit_trt.synthetic.morphology import TYPE_NAMES
from cellvit_trt.synthetic.world import TISSUE_NAMES
from cellvit_trt.training.data import Batch, make_batch, train_seed
from cellvit_trt.training.losses import LossWeights

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainSettings:
    variant: str = "tiny"
    out: Path = Path("cellvit-tiny-synthetic.pth")
    seed: int = 0
    steps: int = 300  # phase 1 steps (crops)
    crop_tiles: int = 4  # generated tiles per phase-1 step
    crops_per_side: int = 2  # each cut into crops_per_side^2 crops
    fine_steps: int = 40  # phase 2 steps (full tiles)
    fine_tiles: int = 4
    tile_size: int = 256
    lr: float = 1.5e-3
    weight_decay: float = 1e-4
    warmup_steps: int = 15
    min_lr_fraction: float = 0.05
    threads: int = 1  # one thread: fastest on a shared CPU (see docs/synthetic.md)
    max_minutes: float | None = None
    tissue_weight: float = 1.0
    log_every: int = 10
    save_every: int = 0  # 0 = only at the end
    init: Path | None = None  # start from this checkpoint's weights (continue / fine-tune)
    data_offset: int = 0  # first tile index of the stream (a continued run should not repeat tiles)

    def validate(self) -> None:
        if self.tile_size % (16 * self.crops_per_side):
            raise ConfigError(
                f"tile_size {self.tile_size} must be a multiple of 16 x crops_per_side "
                f"({16 * self.crops_per_side})"
            )
        for name in ("steps", "fine_steps", "crop_tiles", "fine_tiles", "warmup_steps"):
            if getattr(self, name) < 0:
                raise ConfigError(f"train.{name}: expected >= 0, got {getattr(self, name)}")
        if self.steps + self.fine_steps < 1:
            raise ConfigError("train: steps + fine_steps must be >= 1")
        if self.lr <= 0:
            raise ConfigError(f"train.lr: expected > 0, got {self.lr}")


def _lr_at(step: int, progress: float, s: TrainSettings) -> float:
    if step < s.warmup_steps:
        return s.lr * (step + 1) / s.warmup_steps
    t = min(max(progress, 0.0), 1.0)
    return s.lr * (s.min_lr_fraction + (1 - s.min_lr_fraction) * 0.5 * (1 + math.cos(math.pi * t)))


class _Producer:
    """Background thread building the next batches (two ahead).

    Batch b is a crop batch while b < steps, then a full-tile batch; if a time budget moves the switch earlier
    the training loop sets `fine`. Tile indices never repeat, so no tile is seen twice.
    """

    def __init__(self, s: TrainSettings) -> None:
        self.s = s
        self.fine = False
        self.stop = threading.Event()
        self.q: queue.Queue = queue.Queue(maxsize=2)
        threading.Thread(target=self._work, daemon=True, name="synthetic-batches").start()

    def _work(self) -> None:
        s, k, b = self.s, self.s.data_offset, 0
        try:
            while not self.stop.is_set():
                # batch b's phase follows from its index (deterministic); a time budget may switch earlier
                fine = b >= s.steps or self.fine
                n, cps = (s.fine_tiles, 1) if fine else (s.crop_tiles, s.crops_per_side)
                b += 1
                batch = make_batch([train_seed(s.seed, k + i) for i in range(n)], s.tile_size, cps)
                k += n
                while not self.stop.is_set():
                    try:
                        self.q.put(batch, timeout=0.5)
                        break
                    except queue.Full:
                        continue
        except BaseException as exc:  # surfaced in the training loop
            self.q.put(exc)

    def get(self) -> Batch:
        item = self.q.get()
        if isinstance(item, BaseException):
            raise item
        return item


def model_info(model, settings: TrainSettings | None = None, extra: dict | None = None):
    """ModelInfo of the synthetic demo model: PanNuke nuclei, synthetic tissue presets, 40x, mean/std 0.5."""
    from cellvit_trt.models import make_info

    config = {
        "training": {"synthetic": True, "mixed_precision": False},
        "logging": {
            "run_name": "cellvit-tiny-synthetic-demo",
            "note": "trained on cellvit_trt.synthetic tiles only; a demo/test model, not for diagnosis",
        },
    }
    if settings is not None:
        config["training"].update(
            {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(settings).items() if v is not None}
        )
    if extra:
        config["training"].update(extra)
    return make_info(
        model.spec,
        nuclei_names=tuple(TYPE_NAMES[i] for i in range(6)),
        tissue_names=TISSUE_NAMES,
        magnification=40,
        mean=(0.5, 0.5, 0.5),
        std=(0.5, 0.5, 0.5),
        config=config,
    )


def to_tensors(batch: Batch):
    import torch

    x = torch.from_numpy(batch.image).permute(0, 3, 1, 2).float().div_(255.0).sub_(0.5).div_(0.5)
    return (
        x,
        torch.from_numpy(batch.binary),
        torch.from_numpy(batch.hv),
        torch.from_numpy(batch.types),
        torch.from_numpy(batch.tissue),
    )


def train(s: TrainSettings, model=None, on_step=None) -> dict:
    """Train and save `s.out`; returns a summary (steps, wall/CPU time, losses). `model`: start weights."""
    import torch

    from cellvit_trt.models import build_model, save_checkpoint
    from cellvit_trt.training.losses import cellvit_loss

    s.validate()
    torch.manual_seed(s.seed)
    np.random.seed(s.seed % (2**32))
    if s.threads > 0:
        # On a shared, oversubscribed CPU one thread is far faster than two: OpenMP threads spin at every
        # barrier while waiting for a core (10x more CPU per step with 2 threads at load 15 on 2 cores).
        import cv2

        torch.set_num_threads(s.threads)
        cv2.setNumThreads(s.threads)
    if model is None and s.init is not None:
        from cellvit_trt.models import load_checkpoint

        model, _ = load_checkpoint(s.init)
    if model is None:
        model = build_model(s.variant, num_nuclei_classes=6, num_tissue_classes=len(TISSUE_NAMES))
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=s.lr, weight_decay=s.weight_decay)
    weights = LossWeights(tissue_ce=s.tissue_weight)
    total = s.steps + s.fine_steps
    switch = s.steps / total
    producer = _Producer(s)
    t0 = time.perf_counter()
    c0 = time.process_time()
    history: list[dict] = []
    running: dict[str, float] = {}
    done = 0
    try:
        while True:
            progress = done / total
            if s.max_minutes is not None:
                progress = max(progress, (time.perf_counter() - t0) / (60 * s.max_minutes))
            if progress >= 1.0:
                break
            producer.fine = progress >= switch
            x, binary, hv, types, tissue = to_tensors(producer.get())
            lr = _lr_at(done, progress, s)
            for g in opt.param_groups:
                g["lr"] = lr
            out = model(x)
            loss, parts = cellvit_loss(out, binary, hv, types, tissue, 6, weights)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            done += 1
            parts["total"] = float(loss.detach())
            for k, v in parts.items():
                running[k] = v if k not in running else 0.9 * running[k] + 0.1 * v
            if on_step is not None:
                on_step(done - 1, parts)
            if s.log_every and done % s.log_every == 0:
                rec = {
                    "step": done,
                    "minutes": round((time.perf_counter() - t0) / 60, 2),
                    "cpu_minutes": round((time.process_time() - c0) / 60, 2),
                    "lr": lr,
                    "size": int(x.shape[-1]),
                    **{k: round(v, 4) for k, v in running.items()},
                }
                history.append(rec)
                log.info(
                    "step %d (progress %.2f) %.1f min (cpu %.1f) lr %.2e loss %.4f %s",
                    done,
                    progress,
                    rec["minutes"],
                    rec["cpu_minutes"],
                    lr,
                    running["total"],
                    {k: round(v, 3) for k, v in running.items() if k != "total"},
                )
            if s.save_every and done % s.save_every == 0:
                _save(model, s, done, t0, c0, history, save_checkpoint)
    finally:
        producer.stop.set()
    summary = _save(model, s, done, t0, c0, history, save_checkpoint)
    model.eval()
    return summary


def _save(
    model, s: TrainSettings, done: int, t0: float, c0: float, history: list[dict], save_checkpoint
) -> dict:
    # CPU minutes (all threads of this process) are the honest cost on a shared machine; wall time is load
    minutes = round((time.perf_counter() - t0) / 60, 2)
    cpu = round((time.process_time() - c0) / 60, 2)
    summary = {
        "steps_done": done,
        "wall_minutes": minutes,
        "cpu_minutes": cpu,
        "last": history[-1] if history else {},
    }
    info = model_info(model, s, {"steps_done": done, "wall_minutes": minutes, "cpu_minutes": cpu})
    was_training = model.training
    model.eval()
    sha = save_checkpoint(s.out, model, info, epoch=done, train_history=history)
    model.train(was_training)
    summary["sha256"] = sha
    summary["path"] = str(s.out)
    return summary
