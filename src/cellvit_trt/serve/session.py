"""One slide on the server: push source -> pipeline (shared backend) -> merge -> writers, streamed back.

    s = SlideSession(open_msg, name, settings, shared, out_root)   # the OpenSlide message, checked
    att = s.attach(last_seq=0)          # the stream of one client connection (SlideOpened, then responses)
    s.pump(requests, att)               # reader thread: Tile -> PushSource.submit (blocks = backpressure)
    for msg in s.responses(att): ...    # the handler yields these; stops at the result or an error
    s.detach(att)                       # the connection ended without CloseSlide: kept for a resume
    s.fail(SlideError(...))             # this slide only: pipeline stopped, nothing written, stream ends

Memory per slide is bounded: the push source buffers at most `max_open_rows` rows of model tiles and queues
`queue_tiles` finished tiles; the pipeline's queues are bounded; at most OUTBOX responses wait for a slow
client (then the pipeline waits) and REPLAY already-sent responses are kept for a resume. Outputs are written
into a hidden staging folder that is renamed into place only when complete (outputs.Staging).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from cellvit_trt import __version__
from cellvit_trt.config import to_dict
from cellvit_trt.errors import InputError
from cellvit_trt.serve.errors import SlideError
from cellvit_trt.serve.messages import cells_to_pb
from cellvit_trt.serve.outputs import Staging
from cellvit_trt.serve.settings import SERVE_OUTPUTS
from cellvit_trt.serve.tiles import Layout, decode_tile
from cellvit_trt.serve.v1 import scanner_pb2 as pb

log = logging.getLogger(__name__)

OUTBOX = 16  # responses waiting for the client before the slide's pipeline waits
REPLAY = 64  # responses already handed to gRPC, kept for a resume after a disconnect
_POLL_S = 0.1


class _Attachment:
    """One client connection to the slide."""

    def __init__(self) -> None:
        self.ended = threading.Event()  # the RPC is over (any reason)
        self.superseded = False  # a resume took over


class SlideSession:
    def __init__(
        self,
        msg: pb.OpenSlide,
        name: str,
        settings: Any,
        shared: Any,
        out_root: Path,
        admit: Callable[[str, int], None] | None = None,
    ) -> None:
        """`admit(slide_id, row_bytes)` raises SlideError when the server cannot hold this slide's row
        buffers (`PushSource.max_band_bytes`); it is asked before anything is written."""
        from cellvit_trt.runtime.sources import PushSource
        from cellvit_trt.runtime.writers import open_writers

        meta, be = shared.backend.meta, shared.backend
        self.slide_id, self.name = msg.slide_id, name
        self.width, self.height, self.mpp = int(msg.width), int(msg.height), float(msg.mpp)
        self.settings = settings
        self.layout = Layout.from_message(
            msg.layout if msg.HasField("layout") else None, settings.max_tile_pixels
        )
        self.outputs = list(msg.outputs) or list(settings.outputs)
        bad = [o for o in self.outputs if o not in SERVE_OUTPUTS]
        if bad:
            raise SlideError(
                "INVALID_ARGUMENT", f"outputs: {bad} unknown; expected some of {', '.join(SERVE_OUTPUTS)}"
            )
        if "embeddings" in self.outputs and "tokens" not in be.output_names:
            raise SlideError("INVALID_ARGUMENT", "outputs: 'embeddings' needs a model with a 'tokens' output")
        self.overwrite = bool(msg.overwrite)
        keep = msg.keep_seconds if msg.HasField("keep_seconds") else settings.keep_seconds
        self.keep_seconds = min(int(keep), settings.keep_seconds)
        self.shared = shared
        # A declared scanner tile taller than a model tile keeps more model tile rows open at once: allow
        # what the layout needs (its pixels must be held somewhere); undeclared layouts get the server bound.
        stride = be.tile_size - meta.overlap
        need = -(-self.layout.tile_height // stride) + 2 if not self.layout.any else 0
        self.open_rows = max(settings.max_open_rows, need)
        try:
            self.src = PushSource(
                self.height,
                self.width,
                mpp=self.mpp,
                target_mpp=meta.target_mpp,
                tile_size=be.tile_size,
                overlap=meta.overlap // 2,
                maxsize=settings.queue_tiles,
                timeout=None,  # a slow backend (other slides) is not the scanner's fault; discard aborts
                max_bands=self.open_rows,
                name=msg.slide_id,
            )
        except InputError as exc:
            raise SlideError("FAILED_PRECONDITION", str(exc)) from exc
        self.row_bytes = self.src.max_band_bytes
        if admit is not None:
            admit(msg.slide_id, self.row_bytes)
        if (Path(out_root) / name).exists() and not self.overwrite:
            raise SlideError(
                "ALREADY_EXISTS",
                f"slide {msg.slide_id!r}: {Path(out_root) / name} already holds a result "
                "(open with overwrite to replace it)",
            )
        self.stage = Staging(out_root, name)
        try:
            self.writers = open_writers(
                self.stage.path, self.outputs, info=self.src.info, meta=meta, grid=self.src.grid, source=None
            )
        except BaseException:
            self.stage.discard()
            raise
        from cellvit_trt.runtime.job import TissueVote

        self.vote = TissueVote()
        self.class_names = tuple(meta.class_names)
        self.received: set[tuple[int, int]] = set()
        self.tiles_received = 0
        self.tiles_done = 0
        self.state = "open"  # open -> closing -> done | failed
        self.error: SlideError | None = None
        self.detached_at: float | None = None
        self.t_open, self.t_close, self.t_result = time.monotonic(), None, None
        self._cond = threading.Condition()
        self._outbox: deque[pb.SlideResponse] = deque()
        self._ring: deque[pb.SlideResponse] = deque(maxlen=REPLAY)
        self._seq = 0
        self._pending_cells: list = []
        self._current: _Attachment | None = None
        self.result_taken = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"cvt-slide-{name[:20]}", daemon=True)
        self._thread.start()

    # ---- connections --------------------------------------------------------------------------------------
    def attach(self, last_seq: int = 0, resume: bool = False) -> tuple[_Attachment, pb.SlideResponse]:
        """A new connection; returns it and its SlideOpened (seq 0). A resume replays responses > last_seq."""
        with self._cond:
            if self.state == "failed":
                raise SlideError("NOT_FOUND", f"slide {self.slide_id!r} failed: {self.error.message}")
            if self._current is not None and not self._current.ended.is_set():
                raise SlideError(
                    "ALREADY_EXISTS", f"slide {self.slide_id!r} is being streamed by another client"
                )
            if self._current is not None:
                self._current.superseded = True
            att = _Attachment()
            self._current, self.detached_at = att, None
            replay = [m for m in self._ring if m.seq > last_seq]
            sent = self._ring[-1].seq if self._ring else 0
            complete = last_seq >= sent or bool(self._ring and self._ring[0].seq <= last_seq + 1)
            self._outbox.extendleft(reversed(replay))
            received = sorted(self.received) if resume else []
            self._cond.notify_all()
        g = self.src.grid
        opened = pb.SlideOpened(
            slide_id=self.slide_id,
            output_name=self.name,
            grid_rows=g.rows,
            grid_cols=g.cols,
            tile_size=g.tile_size,
            overlap=g.margin,
            resumed=resume,
            received=[pb.TilePosition(x=x, y=y) for x, y in received],
            replay_complete=complete,
        )
        return att, pb.SlideResponse(seq=0, opened=opened)

    def detach(self, att: _Attachment) -> None:
        """The connection ended. Without CloseSlide the slide waits `keep_seconds` for a resume."""
        att.ended.set()
        with self._cond:
            if att is self._current and self.state in ("open", "closing", "done"):
                self._current, self.detached_at = None, time.monotonic()
            self._cond.notify_all()

    def responses(self, att: _Attachment):
        """The responses for one connection, until the result (or an error: then `self.error` is set)."""
        while True:
            with self._cond:
                while (
                    not self._outbox and self.error is None and not att.ended.is_set() and not att.superseded
                ):
                    self._cond.wait(_POLL_S)
                if self.error is not None or att.ended.is_set() or att.superseded:
                    return
                msg = self._outbox.popleft()
                if not self._ring or msg.seq > self._ring[-1].seq:  # replayed ones are in the ring already
                    self._ring.append(msg)
                self._cond.notify_all()
            yield msg
            if msg.HasField("result"):
                self.result_taken.set()
                return

    def pump(self, requests, att: _Attachment) -> None:
        """Reader thread of one connection: tiles into the push source, CloseSlide ends the scan."""
        try:
            for req in requests:
                if self.state == "failed" or att.superseded:
                    return
                kind = req.WhichOneof("msg")
                if kind == "tile":
                    self._tile(req.tile)
                elif kind == "close":
                    self._close(req.close)
                    return
                elif kind == "open":
                    raise SlideError(
                        "INVALID_ARGUMENT", "OpenSlide twice on one stream (one stream per slide)"
                    )
                else:
                    raise SlideError("INVALID_ARGUMENT", "empty SlideRequest (set open, tile or close)")
            # The request stream ended without CloseSlide: a client that went away (cancelled, or half-closed
            # early). Like a disconnect, the slide is kept for a resume (detach comes with the RPC's end).
        except SlideError as exc:
            self.fail(exc)
        except InputError as exc:  # the push source: e.g. a scan order that keeps too many rows open
            if "rows open" in str(exc):
                hint = "declare the scanner's tile layout in OpenSlide, or raise the server's --max-open-rows"
                self.fail(SlideError("RESOURCE_EXHAUSTED", f"{exc} ({hint})"))
            else:
                self.fail(SlideError("INVALID_ARGUMENT", str(exc)))
        except Exception as exc:  # grpc.RpcError: the client went away (detach happens in the RPC callback)
            if not att.ended.is_set() and self.state != "failed":
                log.warning("slide %s: reading requests failed: %s", self.slide_id, exc)
                self.detach(att)

    def _tile(self, tile: pb.Tile) -> None:
        if self.state != "open":
            raise SlideError("FAILED_PRECONDITION", "a tile after CloseSlide")
        pixels = decode_tile(tile, self.width, self.height, self.layout, self.settings.max_tile_pixels)
        self.src.submit(pixels, int(tile.y), int(tile.x))  # blocks while the pipeline is behind
        with self._cond:
            self.received.add((int(tile.x), int(tile.y)))
            self.tiles_received += 1

    def _close(self, close: pb.CloseSlide) -> None:
        if close.discard:
            self.fail(SlideError("CANCELLED", f"slide {self.slide_id!r}: discarded by the client"))
            return
        with self._cond:
            if self.state != "open":
                return
            self.state, self.t_close = "closing", time.monotonic()
        self.src.finish()

    # ---- failure ------------------------------------------------------------------------------------------
    def fail(self, err: SlideError) -> None:
        """Fail this slide only: stop its pipeline, remove its staging folder, end its stream with `err`."""
        with self._cond:
            if self.state in ("failed", "done"):
                return
            self.state, self.error = "failed", err
            self._cond.notify_all()
        log.warning("slide %s failed: %s %s", self.slide_id, err.code, err.message)
        self.src.abort(SlideError(err.code, f"slide aborted: {err.message}"))

    def wait_stopped(self, timeout: float) -> None:
        """Wait until the slide's pipeline thread has ended (after a failure: its files are removed)."""
        self._thread.join(timeout)

    # ---- the pipeline thread ------------------------------------------------------------------------------
    def _send(self, **fields: Any) -> None:
        with self._cond:
            while len(self._outbox) >= OUTBOX:
                if self.state == "failed":
                    raise SlideError(self.error.code, self.error.message)
                self._cond.wait(_POLL_S)
            self._seq += 1
            self._outbox.append(pb.SlideResponse(seq=self._seq, **fields))
            self._cond.notify_all()

    def _emit(self, batch) -> None:
        self.writers.write(batch)
        self._pending_cells.extend(cells_to_pb(batch, self.src.grid, self.class_names))

    def _on_tile(self, row: int, col: int, cells, logits: np.ndarray) -> None:
        self.vote.add(logits)
        self.writers.add_tile_tissue(row, col, logits)
        self.tiles_done += 1
        g = self.src.grid
        y0, x0 = g.origin(row, col)
        x1, y1 = min(self.width, x0 + g.tile_size), min(self.height, y0 + g.tile_size)
        x0, y0 = max(0, x0), max(0, y0)
        tile = pb.GridTile(row=row, col=col, x=x0, y=y0, width=x1 - x0, height=y1 - y0)
        cells_pb, self._pending_cells = self._pending_cells, []
        self._send(cells=pb.TileCells(tile=tile, cells=cells_pb, tiles_done=self.tiles_done))

    def _run(self) -> None:
        from cellvit_trt.runtime.job import run_push

        s = self.settings
        try:
            stats = run_push(
                self.src,
                self.shared.view(),
                batch=min(s.batch, self.shared.backend.max_batch),
                workers=s.post_workers,
                embeddings="embeddings" in self.outputs,
                emit=self._emit,
                on_tile=self._on_tile,
            )
            if self.state == "failed":
                raise SlideError(self.error.code, self.error.message)
            rest, self._pending_cells = self._pending_cells, []
            if rest:
                self._send(cells=pb.TileCells(cells=rest, tiles_done=self.tiles_done))
            result = self._finish(stats)
            with self._cond:
                if self.state == "failed":
                    return
                self.state = "done"
            self._send(result=result)
        except BaseException as exc:
            self.writers.abort()
            self.stage.discard()
            if self.state != "failed":
                log.exception("slide %s: pipeline failed", self.slide_id)
                self.fail(SlideError("INTERNAL", f"slide {self.slide_id!r}: {exc}"))

    def _finish(self, stats) -> pb.SlideResult:
        from cellvit_trt.runtime.job import _jsonable

        self.t_result = time.monotonic()
        meta, g = self.shared.backend.meta, self.src.grid
        scan = {
            "open_to_close_s": round((self.t_close or self.t_result) - self.t_open, 3),
            "close_to_result_s": round(self.t_result - (self.t_close or self.t_result), 3),
            "total_s": round(self.t_result - self.t_open, 3),
        }
        tissue = self.vote.summary(meta.tissue_names)
        summary = {
            "slide_id": self.slide_id,
            "output": str(self.stage.final),
            "package_version": __version__,
            "source": _jsonable(self.src.info.as_dict()),
            "grid": {"rows": g.rows, "cols": g.cols, "tile_size": g.tile_size, "overlap": g.overlap},
            "tiles_received": self.tiles_received,
            "tiles_processed": stats.tiles,
            "cells": self.writers.cells,
            "tissue": tissue,
            "model": _jsonable(meta.raw) or {"name": meta.name},
            "backend": self.shared.backend.describe(),
            "settings": to_dict(self.settings),
            "scan": scan,
            "timing": stats.to_dict(),
        }
        self.writers.close(summary)
        files = sorted(p.name for p in self.stage.path.iterdir() if not p.name.startswith("."))
        try:
            final = self.stage.commit(self.overwrite)
        except FileExistsError as exc:
            raise SlideError("ALREADY_EXISTS", str(exc)) from exc
        counts = self.writers.counts
        return pb.SlideResult(
            slide_id=self.slide_id,
            output_dir=str(final),
            cells_total=self.writers.cells,
            counts=[
                pb.ClassCount(
                    type=t, name=self.class_names[t] if t < len(self.class_names) else str(t), count=n
                )
                for t, n in sorted(counts.items())
            ],
            outputs=[str(final / f) for f in files],
            timings=pb.Timings(
                open_to_close_s=scan["open_to_close_s"],
                close_to_result_s=scan["close_to_result_s"],
                total_s=scan["total_s"],
                tiles_per_s=stats.tiles_per_s,
                backend_wait_fraction=stats.backend_wait_fraction,
            ),
            tiles_processed=stats.tiles,
            tiles_received=self.tiles_received,
            tissue=str(tissue.get("predicted", "")),
            tissue_probability=float(tissue.get("probability", 0.0)),
        )
