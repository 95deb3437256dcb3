"""Regenerate the committed Python stubs of `proto/cellvit_trt/v1/scanner.proto`.

    python -m cellvit_trt.serve.protogen          # writes src/cellvit_trt/serve/v1/scanner_pb2{,_grpc}.py{,i}

The stubs are committed so that `pip install 'cellvit-trt[serve]'` needs no code generator. They come from a
pinned grpcio-tools (its bundled protoc fixes the protobuf gencode version, and the generated module refuses
an older protobuf runtime), and tests/serve/test_stubs.py regenerates them and compares byte for byte.
The proto is mapped to the import path `cellvit_trt/serve/v1/` so the generated `_grpc` module imports
`cellvit_trt.serve.v1.scanner_pb2`; the wire names (package `cellvit_trt.v1`) are those of the .proto.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

GRPCIO_TOOLS = "1.85.1"  # bundles protoc 35.1 = Python protobuf gencode 7.35.1 (the serve extra's floor)
ROOT = Path(__file__).resolve().parents[3]
PROTO = ROOT / "proto" / "cellvit_trt" / "v1" / "scanner.proto"
PACKAGE_DIR = Path(__file__).resolve().parent / "v1"
FILES = ("scanner_pb2.py", "scanner_pb2.pyi", "scanner_pb2_grpc.py")


def generate(out_dir: Path, proto: Path = PROTO) -> list[Path]:
    """Run protoc (grpcio-tools) on `proto`; returns the generated files, written flat into `out_dir`."""
    from importlib.metadata import version

    from grpc_tools import protoc

    have = version("grpcio-tools")
    if have != GRPCIO_TOOLS:
        raise RuntimeError(
            f"the committed stubs come from grpcio-tools=={GRPCIO_TOOLS}, this is {have}: "
            f"pip install 'grpcio-tools=={GRPCIO_TOOLS}'"
        )
    out_dir = Path(out_dir)
    with tempfile.TemporaryDirectory() as tmp:
        virtual = "cellvit_trt/serve/v1"
        args = [
            "protoc",
            f"-I{virtual}={proto.parent}",
            f"--python_out={tmp}",
            f"--pyi_out={tmp}",
            f"--grpc_python_out={tmp}",
            str(proto),
        ]
        if protoc.main(args) != 0:
            raise RuntimeError(f"protoc failed on {proto}")
        out_dir.mkdir(parents=True, exist_ok=True)
        written = []
        for name in FILES:
            target = out_dir / name
            target.write_bytes((Path(tmp) / virtual / name).read_bytes())
            written.append(target)
    return written


if __name__ == "__main__":
    for path in generate(PACKAGE_DIR):
        print(path)
    sys.exit(0)
