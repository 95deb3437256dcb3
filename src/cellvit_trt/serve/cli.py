"""`cellvit-trt serve`: the scanner integration service (gRPC; docs/serve.md).

    cellvit-trt serve -m model.engine -o /data/cells                   # unix:///tmp/cellvit-trt.sock
    cellvit-trt serve -m model.onnx --listen 127.0.0.1:50051
    cellvit-trt serve -m model.engine --listen 0.0.0.0:50051 --tls-cert c.pem --tls-key k.pem --token-file t

Local only unless TLS and a token are given. Runs until SIGINT/SIGTERM (exit 0 after a clean stop);
exit 2 for usage errors (e.g. a non-local address without TLS and a token), 1 for other errors.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from cellvit_trt.argtypes import nonnegative_int, positive_int
from cellvit_trt.config import add_config_argument


def add_arguments(p: argparse.ArgumentParser) -> None:
    from cellvit_trt.serve.settings import DEFAULT_SOCKET, SERVE_OUTPUTS  # light: no grpc import

    p.add_argument("-m", "--model", default=None, help="engine, ONNX graph, checkpoint or 'demo' (as `run`)")
    p.add_argument("-o", "--output", type=Path, default=None, help="output folder (one folder per slide)")
    p.add_argument(
        "--listen", default=None, help=f"unix:///path or host:port (default {DEFAULT_SOCKET}; local only)"
    )
    p.add_argument("--tls-cert", dest="tls_cert", type=Path, default=None, help="PEM certificate chain")
    p.add_argument("--tls-key", dest="tls_key", type=Path, default=None, help="PEM private key")
    p.add_argument(
        "--token-file",
        dest="token_file",
        type=Path,
        default=None,
        help="file holding the bearer token clients must send (required off the local machine)",
    )
    p.add_argument(
        "--max-slides", dest="max_slides", type=positive_int, default=None, help="slides at once (4)"
    )
    p.add_argument(
        "--keep-seconds",
        dest="keep_seconds",
        type=nonnegative_int,
        default=None,
        help="keep a slide whose client disconnected this long for resume (default 300; 0 = discard)",
    )
    p.add_argument(
        "--max-tile-pixels",
        dest="max_tile_pixels",
        type=positive_int,
        default=None,
        help="largest tile a client may send, width x height (default 4096 x 4096)",
    )
    p.add_argument(
        "--max-open-rows",
        dest="max_open_rows",
        type=positive_int,
        default=None,
        help="model tile rows buffered per slide (default 3; a row-by-row scan needs 2)",
    )
    p.add_argument(
        "--outputs",
        nargs="+",
        default=None,
        choices=SERVE_OUTPUTS,
        metavar="OUT",
        help=f"files per slide: {', '.join(SERVE_OUTPUTS)} (default: geojson cells table summary)",
    )
    p.add_argument(
        "--backend",
        default=None,
        choices=["auto", "tensorrt", "onnxruntime", "torch", "torch-cuda"],
        help="inference backend, chosen as in `run` (default auto)",
    )
    p.add_argument(
        "-b",
        "--batch",
        type=positive_int,
        default=None,
        help="tiles per batch (default: chosen from the memory budget and the model's measured footprint, "
        "as `run`: 8 on a GPU, 1 on a CPU, less if that does not fit)",
    )
    p.add_argument(
        "--max-memory",
        dest="max_memory",
        default=None,
        metavar="SIZE",
        help="host memory the server may take, e.g. 8G (default: what is available); the batch is planned "
        "for --max-slides slides at once, and one that cannot fit stops the server before it listens",
    )
    p.add_argument(
        "-j", "--workers", type=positive_int, default=None, help="post-processing threads per slide"
    )
    p.add_argument(
        "--in-flight", dest="in_flight", type=positive_int, default=None, help="batches in flight (2)"
    )
    p.add_argument("--precision", default=None, choices=["fp32", "fp16"], help="as in `run`")
    p.add_argument("--providers", nargs="+", default=None, metavar="EP", help="ONNX Runtime providers")
    p.add_argument(
        "--threads", type=positive_int, default=None, help="intra-op threads of ONNX Runtime / PyTorch"
    )
    p.add_argument("--device", type=nonnegative_int, default=None, help="CUDA device index")
    p.add_argument("--cuda-graphs", dest="cuda_graphs", action="store_true", default=None, help="TensorRT")
    p.add_argument("--tile-size", dest="tile_size", type=positive_int, default=None, help="checkpoints only")
    p.add_argument("--cache-dir", dest="cache_dir", type=Path, default=None, help="exported graphs")
    add_config_argument(p)


def run(args: argparse.Namespace) -> int:
    from cellvit_trt.config import resolve
    from cellvit_trt.errors import require
    from cellvit_trt.serve.settings import ServeSettings

    require("grpc", "serve", "cellvit-trt serve")
    from cellvit_trt.serve.security import AddressError
    from cellvit_trt.serve.server import serve_forever

    settings = resolve(ServeSettings, args, section="serve")
    try:
        return serve_forever(settings)
    except AddressError as exc:
        print(f"cellvit-trt serve: error: {exc}", file=sys.stderr)
        return 2
