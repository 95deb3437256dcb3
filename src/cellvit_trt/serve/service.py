"""The Scanner servicer: Describe and StreamSlide, and the registry of the slides open on this server.

Each StreamSlide call: the first request must be OpenSlide (new slide, or `resume` of one kept after a
disconnect); a reader thread then feeds the slide's tiles to its session while this handler thread yields the
session's responses. A SlideError ends only that call, with its status code and message.
"""

from __future__ import annotations

import logging
import platform
import threading
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import grpc

from cellvit_trt import __version__
from cellvit_trt.errors import InputError
from cellvit_trt.runtime.memory import gib
from cellvit_trt.runtime.sources.resolution import tolerance_for
from cellvit_trt.serve.errors import SlideError
from cellvit_trt.serve.outputs import folder_name
from cellvit_trt.serve.session import SlideSession
from cellvit_trt.serve.v1 import scanner_pb2 as pb
from cellvit_trt.serve.v1 import scanner_pb2_grpc as pb_grpc

log = logging.getLogger(__name__)

_JANITOR_S = 0.5


def _versions(backend_kind: str) -> dict[str, str]:
    out = {"cellvit-trt": __version__, "python": platform.python_version()}
    names = ["grpcio", "protobuf", "numpy", "numba"]
    names += {"onnxruntime": ["onnxruntime"], "tensorrt": ["tensorrt", "cuda-bindings"]}.get(backend_kind, [])
    names += ["torch"] if backend_kind.startswith("torch") else []
    for name in names:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            pass
    return out


class ScannerService(pb_grpc.ScannerServicer):
    def __init__(self, settings: Any, shared: Any, out_root: Path, row_budget: Any = None) -> None:
        """`row_budget`: the memory plan's `Available`-like spare host bytes for the slides' row buffers
        (`.bytes`, `.describe()`), or None for no check."""
        self.settings, self.shared, self.out_root = settings, shared, Path(out_root)
        self.row_budget = row_budget
        self.sessions: dict[str, SlideSession] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._janitor = threading.Thread(target=self._janitor_loop, name="cvt-serve-janitor", daemon=True)
        self._janitor.start()

    # ---- Describe -----------------------------------------------------------------------------------------
    def limits(self) -> pb.Limits:
        s, be = self.settings, self.shared.backend
        in_memory = s.tiles_in_memory(min(s.batch, be.max_batch), be.max_in_flight)
        return pb.Limits(
            max_slides=s.max_slides,
            max_tile_pixels=s.max_tile_pixels,
            max_message_bytes=message_bytes(s.max_tile_pixels),
            max_slide_side=s.max_slide_side,
            max_keep_seconds=s.keep_seconds,
            tiles_in_memory_per_slide=in_memory,
            max_open_rows=s.max_open_rows,
        )

    def Describe(self, request: pb.DescribeRequest, context: grpc.ServicerContext) -> pb.DescribeResponse:
        be, meta = self.shared.backend, self.shared.backend.meta
        return pb.DescribeResponse(
            model=meta.name,
            precision=meta.precision,
            tile_size=be.tile_size,
            overlap=meta.overlap,
            target_mpp=meta.target_mpp,
            mpp_tolerance=tolerance_for(meta.target_mpp),
            magnification=meta.magnification,
            backend=be.kind,
            max_batch=be.max_batch,
            class_names=list(meta.class_names),
            versions=_versions(be.kind),
            limits=self.limits(),
            outputs=list(self.settings.outputs),
        )

    # ---- StreamSlide --------------------------------------------------------------------------------------
    def StreamSlide(self, request_iterator, context: grpc.ServicerContext):
        session = att = None
        try:
            first = next(request_iterator, None)
            if first is None or first.WhichOneof("msg") != "open":
                raise SlideError("INVALID_ARGUMENT", "the first message of a slide stream must be OpenSlide")
            session, att, opened = self._open(first.open)
        except SlideError as exc:
            context.abort(getattr(grpc.StatusCode, exc.code), exc.message)
        context.add_callback(lambda: session.detach(att))
        threading.Thread(
            target=session.pump, args=(request_iterator, att), name="cvt-serve-reader", daemon=True
        ).start()
        yield opened
        yield from session.responses(att)
        if session.error is not None and not att.superseded:
            session.wait_stopped(30)  # its staging folder is gone before the client hears of the failure
            context.abort(getattr(grpc.StatusCode, session.error.code), session.error.message)

    def _open(self, msg: pb.OpenSlide):
        s = self.settings
        try:
            name = folder_name(msg.slide_id)
        except InputError as exc:
            raise SlideError("INVALID_ARGUMENT", str(exc)) from exc
        with self._lock:
            self._purge()
            session = self.sessions.get(name)
            if msg.resume:
                if session is None or session.slide_id != msg.slide_id:
                    raise SlideError(
                        "NOT_FOUND",
                        f"slide {msg.slide_id!r}: nothing to resume (never opened, finished, failed, or kept "
                        f"longer than {s.keep_seconds} s after a disconnect)",
                    )
                if (session.width, session.height) != (msg.width, msg.height):
                    raise SlideError(
                        "FAILED_PRECONDITION",
                        f"slide {msg.slide_id!r}: resume with {msg.width}x{msg.height}, opened as "
                        f"{session.width}x{session.height}",
                    )
                att, opened = session.attach(last_seq=msg.last_seq, resume=True)
                return session, att, opened
            if session is not None:
                raise SlideError("ALREADY_EXISTS", f"slide {msg.slide_id!r} is already open on this server")
            if len(self.sessions) >= s.max_slides:
                raise SlideError(
                    "RESOURCE_EXHAUSTED",
                    f"{len(self.sessions)} slides are open, the server takes {s.max_slides} at once",
                )
            check_open(msg, s)
            session = SlideSession(msg, name, s, self.shared, self.out_root, admit=self._admit)
            self.sessions[name] = session
            att, opened = session.attach()
        log.info(
            "slide %s opened (%dx%d px, %.4f mpp) -> %s", msg.slide_id, msg.width, msg.height, msg.mpp, name
        )
        return session, att, opened

    def _admit(self, slide_id: str, row_bytes: int) -> None:
        """Refuse a slide whose row buffers, with those of the slides held, exceed what the memory plan left
        (caller holds the lock): row buffers grow with the slide's width, which only OpenSlide tells."""
        if self.row_budget is None:
            return
        held = sum(x.row_bytes for x in self.sessions.values())
        if held + row_bytes > self.row_budget.bytes:
            raise SlideError(
                "RESOURCE_EXHAUSTED",
                f"slide {slide_id!r}: its row buffers need {gib(row_bytes)} (--max-open-rows rows of model "
                f"tiles across its width); {self.row_budget.describe()}, of which the {len(self.sessions)} "
                f"slides held take {gib(held)}: send it when fewer slides are open, lower --max-open-rows, "
                "or raise --max-memory",
            )

    # ---- housekeeping -------------------------------------------------------------------------------------
    def _purge(self) -> None:
        """Forget slides that failed or whose result went out (caller holds the lock)."""
        for name in [n for n, x in self.sessions.items() if x.state == "failed" or x.result_taken.is_set()]:
            del self.sessions[name]

    def _janitor_loop(self) -> None:
        while not self._stop.wait(_JANITOR_S):
            now = time.monotonic()
            with self._lock:
                items = list(self.sessions.items())
            for name, sess in items:
                gone = sess.state == "failed" or sess.result_taken.is_set()
                detached = sess.detached_at is not None and now - sess.detached_at >= sess.keep_seconds
                if detached and not gone:
                    sess.fail(
                        SlideError(
                            "ABORTED",
                            f"slide {sess.slide_id!r}: client gone for {sess.keep_seconds} s; discarded",
                        )
                    )
                    gone = sess.state in ("failed", "done")
                if gone:
                    with self._lock:
                        if self.sessions.get(name) is sess:
                            del self.sessions[name]

    def shutdown(self) -> None:
        self._stop.set()
        with self._lock:
            sessions = list(self.sessions.values())
        for sess in sessions:
            sess.fail(SlideError("UNAVAILABLE", f"slide {sess.slide_id!r}: the server is shutting down"))
        for sess in sessions:
            sess.wait_stopped(10)  # their staging folders are removed before the process exits


def message_bytes(max_tile_pixels: int) -> int:
    """The largest request message: one raw RGB tile at the pixel limit plus its fields."""
    return 3 * max_tile_pixels + 64 * 1024


def check_open(msg: pb.OpenSlide, s: Any) -> None:
    if not msg.slide_id:
        raise SlideError("INVALID_ARGUMENT", "slide_id: empty")
    for name in ("width", "height"):
        v = getattr(msg, name)
        if not 1 <= v <= s.max_slide_side:
            raise SlideError("INVALID_ARGUMENT", f"{name}: {v} px, expected 1..{s.max_slide_side}")
    if not msg.mpp > 0:
        raise SlideError("INVALID_ARGUMENT", f"mpp: {msg.mpp}, expected the level-0 microns per pixel (> 0)")
