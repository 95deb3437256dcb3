"""One input (slide, image) through the whole runtime: source → tissue plan → pipeline → merge → writers.

    result = run_input(path, settings, backend)      # backend already active; returns cells, stats, summary

Stages are the runtime's own objects: `sources.open_source`, `tissue.detect_tissue`, `kernels.PostProcessor`,
`cells.CellBatch.from_tile`, `merge.StreamingMerge`, the writers package, `journal.Journal` (resume) and
`pipeline.Pipeline` (threads and bounded queues). A run owns its folder (`outdir.claim`) and replaces its
whole set at once: the writers write into a fresh hidden sibling (`outdir.staging_dir`), which gets the done
marker last and then takes the folder's place (`io.replace_dir`, an atomic swap on Linux). So a folder never
mixes two runs' files (an older run's csv beside a new GeoJSON), and a failed or interrupted run leaves the
previous complete set as it was. The resume journal (`<out>/.resume/`) keeps the committed tiles so that
`--resume` continues where the run stopped; it goes away with the set it helped replace.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cellvit_trt import __version__
from cellvit_trt.config import to_dict
from cellvit_trt.errors import InputError
from cellvit_trt.io import replace_dir, write_json
from cellvit_trt.runtime.identity import content_digest
from cellvit_trt.runtime.journal import Journal
from cellvit_trt.runtime.outdir import DONE_MARKER, RESUME_DIR, claim, safe_name, staging_dir, write_owner
from cellvit_trt.runtime.pipeline import Pipeline
from cellvit_trt.runtime.progress import Progress
from cellvit_trt.runtime.settings import RunSettings
from cellvit_trt.runtime.stats import Stats
from cellvit_trt.runtime.tiling import PAD_VALUE

log = logging.getLogger(__name__)


@dataclass
class JobResult:
    input: Path
    out_dir: Path
    cells: int
    tiles_processed: int
    tiles_resumed: int
    tiles_planned: int
    stats: Stats
    summary: dict[str, Any]
    skipped: bool = False  # --resume found this input already complete


class TissueVote:
    """Mean softmax of the tissue classifier over the processed tiles (the slide's tissue type)."""

    def __init__(self) -> None:
        self.sum: np.ndarray | None = None
        self.n = 0

    def add(self, logits: np.ndarray) -> None:
        z = np.asarray(logits, np.float64)
        p = np.exp(z - z.max())
        p /= p.sum()
        self.sum = p if self.sum is None else self.sum + p
        self.n += 1

    def summary(self, names: tuple[str, ...]) -> dict[str, Any]:
        if self.sum is None:
            return {"tiles": 0}
        mean = self.sum / self.n
        names = names if len(names) == len(mean) else tuple(str(i) for i in range(len(mean)))
        best = int(np.argmax(mean))
        return {
            "tiles": self.n,
            "predicted": names[best],
            "probability": round(float(mean[best]), 4),
            "mean_probabilities": {n: round(float(v), 4) for n, v in zip(names, mean, strict=True)},
        }


def fingerprint(
    path: Path, backend: Any, settings: RunSettings, tile_size: int, digest: str | None = None
) -> dict[str, Any]:
    """What must not change between an interrupted run and its --resume (or for --resume to skip a finished
    input): the input's identity by content (`identity.content_digest`: header, tail, sampled blocks and
    tiles), not only its size and mtime; the model; the settings that change cells."""
    st = path.stat()
    model = (
        getattr(backend, "engine_path", None)
        or getattr(backend, "onnx_path", None)
        or getattr(backend, "checkpoint", None)
    )
    mst = Path(model).stat() if model is not None and Path(model).exists() else None
    return {
        "input": str(path.resolve()),
        "input_size": st.st_size,
        "input_mtime_ns": st.st_mtime_ns,
        "input_digest": digest or content_digest(path),
        "model": str(model),
        "model_size": mst.st_size if mst else None,
        "model_mtime_ns": mst.st_mtime_ns if mst else None,
        "backend": backend.kind,
        "tile_size": tile_size,
        "mpp": settings.mpp,
        "target_mpp": settings.target_mpp,
        "reader": settings.reader,
        "tissue": settings.tissue,
        "tissue_threshold": settings.tissue_threshold,
        "embeddings": "embeddings" in settings.outputs,
        "package_version": __version__,
    }


def _read_done(marker: Path) -> dict[str, Any]:
    try:
        return json.loads(marker.read_text())
    except (OSError, ValueError):
        return {}


def run_input(
    path: Path,
    settings: RunSettings,
    backend: Any,
    out_dir: Path | None = None,
    progress: bool | None = None,
    digest: str | None = None,
    replace_other: bool = False,
) -> JobResult:
    """One input into `out_dir` (default `<settings.output>/<safe stem>`), which this run claims
    (`outdir.claim`: refused when it belongs to another input). `digest`: the input's content digest when
    the caller has it (planning), else computed here. `replace_other`: see `outdir.claim` (for callers that
    own `out_dir` whatever wrote it before, e.g. the demo)."""
    path = Path(path)
    out_dir = Path(out_dir or settings.output / safe_name(path.stem))
    digest = digest or content_digest(path)
    with claim(out_dir, digest, path, replace_other):
        return _run_claimed(path, settings, backend, out_dir, progress, digest)


def _run_claimed(
    path: Path, settings: RunSettings, backend: Any, out_dir: Path, progress: bool | None, digest: str
) -> JobResult:
    t0 = time.perf_counter()
    fp = fingerprint(path, backend, settings, backend.tile_size, digest)
    marker = out_dir / DONE_MARKER
    done = _read_done(marker)
    if (
        settings.resume
        and done.get("fingerprint") == fp
        and set(done.get("outputs", ())) >= set(settings.outputs)
    ):
        log.warning("%s: already complete in %s; skipped (--resume)", path, out_dir)
        return JobResult(
            path,
            out_dir,
            int(done["cells"]),
            0,
            int(done["tiles"]),
            int(done["tiles"]),
            Stats(),
            {},
            skipped=True,
        )
    # the previous set stays complete (with its done marker) until the new one replaces it whole
    stage = staging_dir(out_dir)
    try:
        summary, planned, stats, resumed = _process(path, settings, backend, out_dir, stage, fp, t0, progress)
        write_json(
            stage / DONE_MARKER,
            {
                "fingerprint": fp,
                "outputs": sorted(settings.outputs),
                "cells": summary["cells"],
                "tiles": planned,
            },
        )
        write_owner(stage, digest, path)
        replace_dir(stage, out_dir)  # the journal in out_dir/.resume goes with the replaced set
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    log.info(
        "%s: %d cells from %d tiles in %.1f s (%.2f tiles/s, backend waited for input %.0f%%)",
        path,
        summary["cells"],
        stats.tiles,
        stats.wall_s,
        stats.tiles_per_s,
        100 * stats.backend_wait_fraction,
    )
    return JobResult(path, out_dir, summary["cells"], stats.tiles, resumed, planned, stats, summary)


def _process(
    path: Path,
    settings: RunSettings,
    backend: Any,
    out_dir: Path,
    stage: Path,
    fp: dict[str, Any],
    t0: float,
    progress: bool | None,
) -> tuple[dict[str, Any], int, Stats, int]:
    """Source -> tissue plan -> pipeline -> merge -> writers into `stage`; the journal in out_dir/.resume.
    Returns (summary, tiles planned, stats, tiles resumed)."""
    from cellvit_trt.kernels import PostProcessor, PostProcessParams
    from cellvit_trt.runtime.cells import CellBatch
    from cellvit_trt.runtime.merge import StreamingMerge
    from cellvit_trt.runtime.sources import open_source
    from cellvit_trt.runtime.tissue import TissueSettings, detect_tissue
    from cellvit_trt.runtime.writers import open_writers

    meta = backend.meta
    target_mpp = settings.target_mpp or meta.target_mpp
    with open_source(
        path,
        target_mpp=target_mpp,
        mpp=settings.mpp,
        tile_size=backend.tile_size,
        overlap=meta.overlap // 2,
        reader=settings.reader,
        max_pixels=settings.max_pixels,
        max_slide_pixels=settings.max_slide_pixels,
    ) as src:
        grid, info = src.grid, src.info
        if settings.tissue:
            plan = detect_tissue(src, TissueSettings(min_tissue_ratio=settings.tissue_threshold))
            planned, tissue_summary = list(plan.tiles), plan.summary()
            if not planned:
                src.warnings.append(
                    f"{path}: no tissue found (0 of {len(grid)} tiles reach the tissue threshold "
                    f"{settings.tissue_threshold}): nothing was segmented; check the image (blank, "
                    "grayscale, another stain) or run with --no-tissue"
                )
        else:
            planned = list(grid.tiles())
            tissue_summary = {"tiles_total": len(grid), "tiles_kept": len(grid), "tiles_skipped": 0}
        journal = Journal.open(
            out_dir / RESUME_DIR,
            fp,
            settings.resume,
            settings.checkpoint_tiles,
            transform=(float(info.scale), info.offset),
            chunk_seconds=settings.checkpoint_seconds,
        )
        embeddings = "embeddings" in settings.outputs
        stage.mkdir(parents=True)
        writers = open_writers(stage, settings.outputs, info=info, meta=meta, grid=grid, source=src)
        try:
            merge = StreamingMerge(grid, planned=planned, emit=writers.write)
            vote = TissueVote()
            resumed = 0
            for row, col, cells, extra in journal.replay():
                merge.add(row, col, cells)
                vote.add(extra["tissue_logits"])
                writers.add_tile_tissue(row, col, extra["tissue_logits"])
                resumed += 1
            done = journal.done()
            todo = [rc for rc in planned if rc not in done]
            if resumed:
                log.warning("%s: resuming: %d of %d tiles were already done", path, resumed, len(planned))
            pp = PostProcessor(PostProcessParams.for_magnification(meta.magnification))

            bad: dict[tuple[int, int], str] = {}  # tiles that failed to decode: left out, counted, reported

            def read(rc: tuple[int, int]) -> np.ndarray:
                try:
                    return src.read_tile(*rc).image
                except InputError as exc:
                    bad[rc] = f"tile (row {rc[0]}, col {rc[1]}): {exc}"
                    return np.full((grid.tile_size, grid.tile_size, 3), PAD_VALUE, np.uint8)

            def process(rc: tuple[int, int], maps: dict[str, np.ndarray]) -> tuple[CellBatch, np.ndarray]:
                tile = pp.process_tile(maps["fg"], maps["hv"], maps["type_map"])
                tokens = maps.get("tokens") if embeddings else None
                return CellBatch.from_tile(tile.cells, rc[0], rc[1], grid, info, tokens=tokens), maps[
                    "tissue_logits"
                ]

            def sink(rc: tuple[int, int], res: tuple[CellBatch, np.ndarray]) -> None:
                cells, logits = res
                if rc in bad:  # not journaled: a --resume tries it again
                    merge.skip(*rc)
                    return
                journal.append(rc[0], rc[1], cells, {"tissue_logits": logits})
                merge.add(rc[0], rc[1], cells)
                vote.add(logits)
                writers.add_tile_tissue(rc[0], rc[1], logits)

            bar = Progress(len(planned), desc=path.name, enabled=progress, initial=resumed)
            pipe = Pipeline(
                backend,
                read=read,
                process=process,
                sink=sink,
                batch=min(settings.batch, backend.max_batch),
                workers=settings.post_workers,
                readers=settings.reader_threads(backend.kind),
                queue_size=settings.queue_size,
                in_flight=min(settings.in_flight, backend.max_in_flight),
                progress=bar,
            )
            try:
                stats = pipe.run(todo)
            except KeyboardInterrupt:
                journal.commit()  # the pipeline threads are stopped: keep every finished tile for --resume
                raise
            finally:
                bar.close()
            journal.commit()
            merge.finish()
            _decode_errors(path, bad, len(planned), settings.max_bad_tiles, src.warnings)
            summary = {
                "input": str(path),
                "output": str(out_dir),
                "package_version": __version__,
                "source": _jsonable(info.as_dict()),
                "grid": {
                    "rows": grid.rows,
                    "cols": grid.cols,
                    "tile_size": grid.tile_size,
                    "overlap": grid.overlap,
                },
                "tissue_detection": tissue_summary,
                "tiles_planned": len(planned),
                "tiles_resumed": resumed,
                "tiles_processed": stats.tiles - len(bad),
                "tiles_decode_errors": len(bad),
                "decode_errors": [{"tile": list(rc), "error": m} for rc, m in sorted(bad.items())[:50]],
                "cells": merge.emitted,
                "cells_dropped_in_merge": merge.dropped,
                "merge_max_pending": merge.max_pending,
                "tissue": vote.summary(meta.tissue_names),
                "model": _jsonable(meta.raw) or {"name": meta.name},
                "backend": backend.describe(),
                "settings": to_dict(settings),
                "timing": stats.to_dict(),
                "warnings": list(src.warnings),
                "elapsed_s": round(time.perf_counter() - t0, 3),
            }
            for w in src.warnings:
                log.warning("%s", w)
            writers.close(summary)
        except BaseException:
            writers.abort()
            raise
    return summary, len(planned), stats, resumed


def _decode_errors(
    path: Path, bad: dict[tuple[int, int], str], planned: int, max_fraction: float, warnings: list[str]
) -> None:
    """Tiles whose data could not be decoded (reader errors, libjpeg's corrupt-data reports) were left out of
    the merge. Up to `max_fraction` of the planned tiles that is a warning; beyond, the input fails."""
    if not bad:
        return
    first = bad[min(bad)]
    if len(bad) > max_fraction * planned:
        raise InputError(
            f"{path}: {len(bad)} of {planned} tiles could not be decoded, more than --max-bad-tiles "
            f"{max_fraction} allows; first: {first}"
        )
    warnings.append(
        f"{path}: {len(bad)} of {planned} tiles could not be decoded and were left out (their cells are "
        f"missing; see decode_errors in summary.json); first: {first}"
    )


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, (Path, os.PathLike)):
        return str(obj)
    return obj


class _PushTile:
    """A pushed tile as a pipeline spec: small repr for messages, pixels dropped once read."""

    __slots__ = ("row", "col", "image")

    def __init__(self, tile: Any) -> None:
        self.row, self.col, self.image = tile.row, tile.col, tile.image

    def __repr__(self) -> str:
        return f"({self.row}, {self.col})"


def run_push(
    src: Any,
    backend: Any,
    *,
    batch: int | None = None,
    workers: int = 0,
    embeddings: bool = False,
    queue_size: int | None = None,
    emit: Callable[[Any], None] | None = None,
    on_tile: Callable[[int, int, Any, np.ndarray], None] | None = None,
    batch_wait_s: float | None = 0.05,
) -> Stats:
    """Scanner mode: tiles of a `sources.PushSource`, as they complete, through the pipeline and the merge;
    every final CellBatch is handed back with `src.deliver` (the scanner reads them from `src.results()`),
    or to `emit` when given. `on_tile(row, col, cells, tissue_logits)` runs (in the sink thread) after each
    tile went into the merge, i.e. after the cells it made final were emitted. A batch waits at most
    `batch_wait_s` for its next tile once it has one (a scanner is slower than the backend; None: fill it).

    Call it in the consumer thread while the scanner thread submits pixels; it returns when the scanner has
    called `finish()` and every cell was delivered (then `src.results()` ends).
    """
    from cellvit_trt.errors import InputError
    from cellvit_trt.kernels import PostProcessor, PostProcessParams
    from cellvit_trt.runtime.cells import CellBatch
    from cellvit_trt.runtime.merge import StreamingMerge

    grid, info, meta = src.grid, src.info, backend.meta
    if grid.tile_size != backend.tile_size:
        raise InputError(
            f"{info.name}: push tiles are {grid.tile_size} px, the model takes {backend.tile_size} px "
            f"(create the PushSource with tile_size={backend.tile_size})"
        )
    pp = PostProcessor(PostProcessParams.for_magnification(meta.magnification))
    merge = StreamingMerge(grid, planned=None, emit=emit or src.deliver)

    def read(t: _PushTile) -> np.ndarray:
        image, t.image = t.image, None
        return image

    def process(t: _PushTile, maps: dict[str, np.ndarray]) -> tuple[CellBatch, np.ndarray]:
        tile = pp.process_tile(maps["fg"], maps["hv"], maps["type_map"])
        tokens = maps.get("tokens") if embeddings else None
        cells = CellBatch.from_tile(tile.cells, t.row, t.col, grid, info, tokens=tokens)
        return cells, maps["tissue_logits"]

    def sink(t: _PushTile, res: tuple[CellBatch, np.ndarray]) -> None:
        merge.add(t.row, t.col, res[0])
        if on_tile is not None:
            on_tile(t.row, t.col, res[0], res[1])

    try:
        stats = Pipeline(
            backend,
            read=read,
            process=process,
            sink=sink,
            batch=min(batch or backend.max_batch, backend.max_batch),
            workers=workers or max(1, os.cpu_count() or 1),
            queue_size=queue_size,
            batch_wait_s=batch_wait_s,
        ).run(_PushTile(t) for t in src.tiles())
        merge.finish()
    finally:
        src.close_results()
    return stats
