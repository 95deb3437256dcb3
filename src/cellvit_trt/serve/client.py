"""Python client of `cellvit-trt serve`, and a command that streams a slide file through it.

    with ScannerClient("unix:///tmp/cellvit-trt.sock") as client:
        print(client.describe().model)
        slide = client.open_slide("S24-0042", width=w, height=h, mpp=0.25, layout=(1024, 1024),
                                  on_cells=lambda cells, tile: ...)     # called as tiles finish
        for x, y, rgb in scanner_tiles():
            slide.send_rgb(x, y, rgb)                 # blocks while the server is behind (flow control)
        result = slide.close()                       # SlideResult: counts, output paths, timings

    python -m cellvit_trt.serve.client slide.svs --target unix:///tmp/cellvit-trt.sock --tile 1024

A failed slide raises `SlideFailed` (gRPC status code and the server's message) from send_*/close.
"""

from __future__ import annotations

import argparse
import json
import queue
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np

from cellvit_trt.argtypes import positive_float, positive_int
from cellvit_trt.serve.messages import cell_to_dict
from cellvit_trt.serve.v1 import scanner_pb2 as pb
from cellvit_trt.serve.v1 import scanner_pb2_grpc as pb_grpc

RECEIVE_LIMIT = 256 * 1024 * 1024  # one TileCells message of a dense tile is a few MB; stay well above
_END = object()


class SlideFailed(RuntimeError):
    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(f"{code.name}: {details}")
        self.code, self.details = code, details


def _wait(event: threading.Event, timeout: float | None = None) -> bool:
    """Event.wait in slices, so that Ctrl-C reaches a caller waiting in the main thread (a signal delivered
    to one of gRPC's threads is handled only when the main thread wakes)."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        left = 0.2 if deadline is None else min(0.2, deadline - time.monotonic())
        if event.wait(max(0.0, left)) or (deadline is not None and time.monotonic() >= deadline):
            return event.is_set()


class ScannerClient:
    def __init__(
        self,
        target: str = "unix:///tmp/cellvit-trt.sock",
        *,
        token: str | None = None,
        root_certificates: bytes | None = None,
        tls: bool = False,
        send_limit: int = 64 * 1024 * 1024,
    ) -> None:
        options = [
            ("grpc.max_receive_message_length", RECEIVE_LIMIT),
            ("grpc.max_send_message_length", send_limit),
        ]
        if tls or root_certificates is not None:
            creds = grpc.ssl_channel_credentials(root_certificates=root_certificates)
            self.channel = grpc.secure_channel(target, creds, options=options)
        else:
            self.channel = grpc.insecure_channel(target, options=options)
        self.metadata = [("authorization", f"Bearer {token}")] if token else []
        self.stub = pb_grpc.ScannerStub(self.channel)

    def describe(self, timeout: float = 30) -> pb.DescribeResponse:
        return self.stub.Describe(pb.DescribeRequest(), metadata=self.metadata, timeout=timeout)

    def health(self, service: str = "", timeout: float = 10) -> str:
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        stub = health_pb2_grpc.HealthStub(self.channel)
        res = stub.Check(
            health_pb2.HealthCheckRequest(service=service), metadata=self.metadata, timeout=timeout
        )
        return health_pb2.HealthCheckResponse.ServingStatus.Name(res.status)

    def open_slide(
        self,
        slide_id: str,
        width: int,
        height: int,
        mpp: float,
        *,
        layout: tuple[int, int] | tuple[int, int, int, int] | None = None,
        outputs: tuple[str, ...] = (),
        overwrite: bool = False,
        keep_seconds: int | None = None,
        resume: bool = False,
        last_seq: int = 0,
        on_cells: Callable[[list[dict], pb.GridTile | None], None] | None = None,
        queue_size: int = 2,
    ) -> SlideStream:
        msg = pb.OpenSlide(
            slide_id=slide_id,
            width=width,
            height=height,
            mpp=mpp,
            outputs=list(outputs),
            overwrite=overwrite,
            resume=resume,
            last_seq=last_seq,
        )
        if layout is not None:
            tw, th, *stride = layout
            sx, sy = stride if stride else (tw, th)
            msg.layout.CopyFrom(pb.TileLayout(tile_width=tw, tile_height=th, stride_x=sx, stride_y=sy))
        if keep_seconds is not None:
            msg.keep_seconds = keep_seconds
        return SlideStream(self, msg, on_cells, queue_size)

    def close(self) -> None:
        self.channel.close()

    def __enter__(self) -> ScannerClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class SlideStream:
    """One slide's stream. Tiles go through a small queue that gRPC drains as flow control allows."""

    def __init__(self, client: ScannerClient, open_msg: pb.OpenSlide, on_cells, queue_size: int) -> None:
        self.on_cells = on_cells
        self._requests: queue.Queue = queue.Queue(maxsize=max(1, queue_size))
        self._requests.put(pb.SlideRequest(open=open_msg))
        self.opened: pb.SlideOpened | None = None
        self.result: pb.SlideResult | None = None
        self.error: SlideFailed | None = None
        self.last_seq = open_msg.last_seq
        self.cells_received = 0
        self.sent: list[tuple[int, int, int, int, float]] = []  # x, y, w, h, time handed to gRPC
        self.tile_latency: list[float] = []  # per finished model tile: last covering send -> its cells
        self._opened = threading.Event()
        self._done = threading.Event()
        self._call = client.stub.StreamSlide(self._iter(), metadata=client.metadata)
        self._receiver = threading.Thread(target=self._receive, name="cvt-client-recv", daemon=True)
        self._receiver.start()
        _wait(self._opened)
        self._raise()

    # ---- sending ------------------------------------------------------------------------------------------
    def send_rgb(self, x: int, y: int, rgb: np.ndarray) -> None:
        a = np.ascontiguousarray(rgb, dtype=np.uint8)
        if a.ndim != 3 or a.shape[2] != 3:
            raise ValueError(f"send_rgb: expected uint8 [h, w, 3], got {a.dtype}{list(a.shape)}")
        h, w = a.shape[:2]
        self._put(pb.SlideRequest(tile=pb.Tile(x=x, y=y, width=w, height=h, rgb=a.tobytes())))

    def send_jpeg(self, x: int, y: int, width: int, height: int, data: bytes) -> None:
        self._put(pb.SlideRequest(tile=pb.Tile(x=x, y=y, width=width, height=height, jpeg=data)))

    def close(self, timeout: float | None = None) -> pb.SlideResult:
        """End the scan; returns the slide result once every cell is out and the files are written."""
        self._put(pb.SlideRequest(close=pb.CloseSlide()))
        _wait(self._done, timeout)
        self._raise()
        if self.result is None:
            raise TimeoutError(f"no slide result within {timeout} s")
        return self.result

    def discard(self) -> None:
        self._put(pb.SlideRequest(close=pb.CloseSlide(discard=True)))
        _wait(self._done)

    def disconnect(self) -> None:
        """Drop the connection without closing the slide (what a crashed scanner does)."""
        self._call.cancel()
        _wait(self._done, 30)

    def _put(self, req: pb.SlideRequest) -> None:
        while True:
            self._raise()
            if self._done.is_set():
                raise SlideFailed(grpc.StatusCode.CANCELLED, "the stream has ended")
            try:
                self._requests.put(req, timeout=0.1)
                return
            except queue.Full:
                continue

    def _iter(self) -> Iterator[pb.SlideRequest]:
        while not self._done.is_set():
            try:
                req = self._requests.get(timeout=0.1)
            except queue.Empty:
                continue
            if req.WhichOneof("msg") == "tile":
                t = req.tile
                self.sent.append((t.x, t.y, t.width, t.height, time.perf_counter()))
            yield req
            if req.WhichOneof("msg") == "close":
                return

    def _raise(self) -> None:
        if self.error is not None:
            raise self.error

    # ---- receiving ----------------------------------------------------------------------------------------
    def _receive(self) -> None:
        try:
            for resp in self._call:
                kind = resp.WhichOneof("msg")
                if kind == "opened":
                    self.opened = resp.opened
                    self._opened.set()
                    continue
                if kind == "cells":
                    self._cells(resp.cells)
                elif kind == "result":
                    self.result = resp.result
                self.last_seq = resp.seq  # after delivery: a resume from it never misses what on_cells lacks
        except grpc.RpcError as exc:
            if exc.code() != grpc.StatusCode.CANCELLED or self.result is None:
                self.error = SlideFailed(exc.code(), exc.details() or "")
        finally:
            self._done.set()
            self._opened.set()

    def _cells(self, msg: pb.TileCells) -> None:
        now = time.perf_counter()
        cells = [cell_to_dict(c) for c in msg.cells]
        self.cells_received += len(cells)
        tile = msg.tile if msg.HasField("tile") else None
        if tile is not None:
            covering = [
                t
                for x, y, w, h, t in self.sent
                if x < tile.x + tile.width and tile.x < x + w and y < tile.y + tile.height and tile.y < y + h
            ]
            if covering:
                self.tile_latency.append(now - max(covering))
        if self.on_cells is not None:
            self.on_cells(cells, tile)


# ---- streaming a slide file (the command) ----------------------------------------------------------------
def slide_tiles(
    path: Path, tile: int
) -> tuple[int, int, float | None, Iterator[tuple[int, int, np.ndarray]]]:
    """Level-0 tiles of a slide file (OpenSlide, else tiffslide) in raster order: (x, y, RGB)."""
    try:
        import openslide

        slide = openslide.OpenSlide(str(path))
    except Exception:  # not installed, or a format only tiffslide reads
        import tiffslide

        slide = tiffslide.TiffSlide(str(path))
    w, h = slide.dimensions
    mpp = slide.properties.get("openslide.mpp-x") or slide.properties.get("tiffslide.mpp-x")

    def tiles() -> Iterator[tuple[int, int, np.ndarray]]:
        try:
            for y in range(0, h, tile):
                for x in range(0, w, tile):
                    tw, th = min(tile, w - x), min(tile, h - y)
                    region = np.asarray(slide.read_region((x, y), 0, (tw, th)))
                    yield x, y, np.ascontiguousarray(region[..., :3])
        finally:
            slide.close()

    return w, h, float(mpp) if mpp else None, tiles()


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="python -m cellvit_trt.serve.client", description=__doc__.split("\n")[0]
    )
    ap.add_argument("slide", type=Path, help="slide file streamed tile by tile (level 0)")
    ap.add_argument("--target", default="unix:///tmp/cellvit-trt.sock")
    ap.add_argument("--id", default=None, help="slide id (default: the file's stem)")
    ap.add_argument("--tile", type=positive_int, default=1024, help="scanner tile size to send")
    ap.add_argument("--mpp", type=positive_float, default=None, help="level-0 mpp when the file has none")
    ap.add_argument("--jpeg", action="store_true", help="send JPEG bytes instead of raw RGB")
    ap.add_argument("--token-file", type=Path, default=None)
    ap.add_argument("--ca", type=Path, default=None, help="CA certificate (PEM) of a TLS server")
    ap.add_argument("--overwrite", action="store_true")
    ap.add_argument("--cells", type=Path, default=None, help="write the streamed cells here (JSON lines)")
    return ap


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    token = args.token_file.read_text().strip() if args.token_file else None
    ca = args.ca.read_bytes() if args.ca else None
    w, h, mpp, tiles = slide_tiles(args.slide, args.tile)
    mpp = args.mpp or mpp
    if mpp is None:
        print(f"{args.slide}: no mpp in the file; give --mpp", file=sys.stderr)
        return 2
    out = open(args.cells, "w") if args.cells else None  # noqa: SIM115 - closed below

    def on_cells(cells: list[dict], tile: Any) -> None:
        if out is not None:
            for c in cells:
                out.write(json.dumps(c) + "\n")

    t0 = time.perf_counter()
    with ScannerClient(args.target, token=token, root_certificates=ca) as client:
        try:
            slide = client.open_slide(
                args.id or args.slide.stem,
                w,
                h,
                mpp,
                layout=(args.tile, args.tile),
                overwrite=args.overwrite,
                on_cells=on_cells,
            )
            for x, y, rgb in tiles:
                if args.jpeg:
                    import cv2

                    ok, buf = cv2.imencode(".jpg", rgb[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 90])
                    slide.send_jpeg(x, y, rgb.shape[1], rgb.shape[0], buf.tobytes())
                else:
                    slide.send_rgb(x, y, rgb)
            result = slide.close()
        except SlideFailed as exc:
            print(f"{args.slide}: {exc}", file=sys.stderr)
            return 1
        finally:
            if out is not None:
                out.close()
    lat = np.array(slide.tile_latency) if slide.tile_latency else np.zeros(1)
    print(
        f"{args.slide}: {result.cells_total} cells, {result.tiles_processed} model tiles in "
        f"{time.perf_counter() - t0:.1f} s; tile latency p50 {np.percentile(lat, 50):.2f} s, "
        f"p99 {np.percentile(lat, 99):.2f} s -> {result.output_dir}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
