"""Build and run the gRPC server: backend warm, Scanner + health services, limits, address, TLS, token.

server, service, where = start(settings)     # returns once it listens and the backend is warm
serve_forever(settings)                      # `cellvit-trt serve`: until SIGINT/SIGTERM
"""

from __future__ import annotations

import contextlib
import dataclasses
import faulthandler
import logging
import os
import signal
import socket
import sys
import threading
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import numpy as np
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from cellvit_trt.errors import InputError
from cellvit_trt.serve.budget import plan_serve_memory
from cellvit_trt.serve.outputs import clean_stale
from cellvit_trt.serve.security import (
    TokenInterceptor,
    check_exposure,
    parse_listen,
    read_tls,
    read_token,
)
from cellvit_trt.serve.service import ScannerService, message_bytes
from cellvit_trt.serve.shared_backend import SharedBackend
from cellvit_trt.serve.v1 import scanner_pb2_grpc as pb_grpc

log = logging.getLogger(__name__)
SERVICE_NAME = "cellvit_trt.v1.Scanner"


def open_service_backend(s: Any):
    """The backend, chosen exactly as `cellvit-trt run` chooses it (`backends.open_run_backend`)."""
    from cellvit_trt.runtime.backends import open_run_backend

    return open_run_backend(s)


def row_budget(plan: Any) -> Any:
    """What the memory plan leaves for the slides' row buffers, as an `Available` saying where it is from."""
    from cellvit_trt.runtime.memory import Available, gib

    return Available(
        plan.spare_host(),
        f"left for row buffers by the memory plan: a {gib(plan.host_budget.bytes)} budget "
        f"({plan.host_budget.source}) minus the estimated peak of {gib(plan.host_estimate)} "
        "with 10 % headroom",
    )


def warm_up(backend) -> None:
    """One white batch through the backend and the post-processing (JIT, engine, allocations)."""
    from cellvit_trt.kernels import PostProcessor, PostProcessParams

    t = backend.tile_size
    maps = backend.infer(np.full((1, t, t, 3), 255, np.uint8))
    PostProcessor(PostProcessParams.for_magnification(backend.meta.magnification)).process_tile(
        maps["fg"][0], maps["hv"][0], maps["type_map"][0]
    )


def _lock_output(root: Path):
    """Hold an exclusive lock on the output folder for the server's life (one server per folder)."""
    import fcntl

    root.mkdir(parents=True, exist_ok=True)
    fh = open(root / ".cellvit-serve.lock", "a+b")  # noqa: SIM115 - held until the process ends
    try:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        fh.close()
        raise InputError(f"{root}: another cellvit-trt serve writes into this folder") from exc
    return fh


def _prepare_unix(path: str) -> None:
    """Remove a socket file left by a killed server; refuse when a server still answers there."""
    p = Path(path)
    if not p.exists() and not p.is_symlink():
        p.parent.mkdir(parents=True, exist_ok=True)
        return
    if not p.is_socket():
        raise InputError(f"--listen unix://{path}: exists and is not a socket")
    with socket.socket(socket.AF_UNIX) as s, contextlib.suppress(OSError):
        s.connect(path)
        raise InputError(f"--listen unix://{path}: another server is listening there")
    p.unlink()


def start(settings: Any):
    """Start listening with a warm backend; returns (server, service, address text, backend, lock)."""
    s = settings
    addr = parse_listen(s.listen)
    check_exposure(addr, tls=s.tls_cert is not None, token=s.token_file is not None)
    token = read_token(s.token_file) if s.token_file else None
    creds = read_tls(s.tls_cert, s.tls_key) if s.tls_cert else None
    out_root = Path(s.output).resolve()
    lock = _lock_output(out_root)
    for p in clean_stale(out_root):
        log.warning("removed %s (left by a server that was stopped mid-slide)", p)

    backend = open_service_backend(s)
    try:
        plan = plan_serve_memory(backend, s)  # before activation: a batch that cannot fit stops here
    except BaseException:
        lock.close()
        raise
    print(f"cellvit-trt serve: {plan.describe()}", file=sys.stderr, flush=True)
    s = dataclasses.replace(s, batch=plan.batch)
    backend = backend.activate()
    try:
        warm_up(backend)
        shared = SharedBackend(backend)
        service = ScannerService(s, shared, out_root, row_budget=row_budget(plan))
        workers = s.max_slides + 4  # one handler thread per slide stream, plus Describe/health calls
        server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="cvt-grpc"),
            interceptors=[TokenInterceptor(token)] if token else [],
            options=[
                ("grpc.max_receive_message_length", message_bytes(s.max_tile_pixels)),
                ("grpc.max_send_message_length", -1),
                ("grpc.keepalive_time_ms", 30_000),
                ("grpc.keepalive_timeout_ms", 10_000),
                ("grpc.http2.min_ping_interval_without_data_ms", 5_000),
                ("grpc.so_reuseport", 0),
            ],
            maximum_concurrent_rpcs=workers,
        )
        pb_grpc.add_ScannerServicer_to_server(service, server)
        health_servicer = health.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
        if addr.kind == "unix":
            _prepare_unix(addr.path)
        port = server.add_secure_port(addr.target, creds) if creds else server.add_insecure_port(addr.target)
        if addr.kind == "tcp" and port == 0:
            raise InputError(
                f"--listen {addr.target}: cannot bind (in use, or not an address of this machine)"
            )
        server.start()
        if addr.kind == "unix":
            os.chmod(addr.path, 0o660)  # the user and group of the server only
        where = f"unix://{addr.path}" if addr.kind == "unix" else f"{addr.host}:{port}"
        for name in ("", SERVICE_NAME):
            health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    except BaseException:
        backend.deactivate()
        lock.close()
        raise
    service.health = health_servicer
    return server, service, where, backend, lock


def serve_forever(settings: Any) -> int:
    server, service, where, backend, lock = start(settings)
    stop = threading.Event()

    def on_signal(signum, frame):  # noqa: ARG001 - signal API
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, on_signal)
    # `kill -USR1 <pid>`: every thread's stack on stderr, for a server that does not answer or does not stop.
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    be = backend
    print(
        f"cellvit-trt serve: listening on {where} (model {be.meta.name}, {be.kind}, tile {be.tile_size}, "
        f"output {Path(settings.output).resolve()})",
        flush=True,
    )
    # In slices: a signal delivered to one of gRPC's or the backend's threads only sets CPython's flag, and
    # the main thread runs the handler when it next wakes; a plain wait() would sleep through SIGTERM.
    while not stop.wait(0.2):
        pass
    print("cellvit-trt serve: stopping", file=sys.stderr, flush=True)
    for name in ("", SERVICE_NAME):
        service.health.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
    service.shutdown()
    server.stop(grace=5).wait(10)
    service.shared.close()
    backend.deactivate()
    lock.close()
    return 0
