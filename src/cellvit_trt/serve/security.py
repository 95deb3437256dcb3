"""Who may talk to the server: local only by default; TLS and a bearer token for any other interface.

addr = parse_listen("unix:///run/cellvit.sock")       # Address(kind="unix", ..., local=True)
check_exposure(addr, tls=..., token=...)                # AddressError unless local, or TLS + token
TokenInterceptor(token)                                 # every RPC needs `authorization: Bearer <token>`
"""

from __future__ import annotations

import hmac
import ipaddress
import os
import stat
from dataclasses import dataclass
from pathlib import Path

import grpc

from cellvit_trt.errors import InputError

MIN_TOKEN_CHARS = 16


class AddressError(InputError):
    """A usage error about where to listen (exit code 2)."""


@dataclass(frozen=True)
class Address:
    target: str  # what grpc's add_*_port takes
    kind: str  # "unix" or "tcp"
    host: str = ""
    port: int = 0
    path: str = ""

    @property
    def local(self) -> bool:
        if self.kind == "unix":
            return True
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host.strip("[]")).is_loopback
        except ValueError:
            return False


def parse_listen(listen: str) -> Address:
    if listen.startswith("unix:"):
        path = listen[len("unix://") :] if listen.startswith("unix://") else listen[len("unix:") :]
        if not path:
            raise AddressError(f"--listen {listen}: expected unix:///absolute/path.sock")
        return Address(f"unix:{path}", "unix", path=path)
    host, sep, port = listen.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise AddressError(f"--listen {listen}: expected unix:///path or host:port (e.g. 127.0.0.1:50051)")
    return Address(listen, "tcp", host=host, port=int(port))


def check_exposure(addr: Address, tls: bool, token: bool) -> None:
    if addr.local:
        return
    missing = [what for what, have in (("--tls-cert/--tls-key", tls), ("--token-file", token)) if not have]
    if missing:
        raise AddressError(
            f"--listen {addr.target}: not a local address; serving other machines needs TLS and a token "
            f"(missing {' and '.join(missing)}). Use a unix socket or 127.0.0.1 for local use."
        )


def read_token(path: Path) -> str:
    try:
        token = Path(path).read_text(encoding="utf-8").strip()
        mode = os.stat(path).st_mode
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"--token-file {path}: cannot read it ({exc})") from exc
    if len(token) < MIN_TOKEN_CHARS or any(c.isspace() for c in token):
        raise InputError(
            f"--token-file {path}: expected one token of at least {MIN_TOKEN_CHARS} characters without spaces"
        )
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise InputError(f"--token-file {path}: readable by others (mode {oct(mode & 0o777)}); chmod 600 it")
    return token


def read_tls(cert: Path, key: Path) -> grpc.ServerCredentials:
    try:
        pair = (Path(key).read_bytes(), Path(cert).read_bytes())
    except OSError as exc:
        raise InputError(f"--tls-cert/--tls-key: cannot read {exc.filename} ({exc.strerror})") from exc
    return grpc.ssl_server_credentials([pair])


class TokenInterceptor(grpc.ServerInterceptor):
    """Refuses every call without `authorization: Bearer <token>` (compared in constant time)."""

    def __init__(self, token: str) -> None:
        self._expected = f"Bearer {token}".encode()

    def intercept_service(self, continuation, details):
        got = next((v for k, v in details.invocation_metadata or () if k == "authorization"), "")
        got = got.encode() if isinstance(got, str) else bytes(got)
        handler = continuation(details)
        if hmac.compare_digest(got, self._expected) or handler is None:
            return handler

        def deny(request, context):
            context.abort(
                grpc.StatusCode.UNAUTHENTICATED, "missing or wrong token (authorization: Bearer ...)"
            )

        def deny_stream(request, context):
            deny(request, context)
            yield from ()

        if handler.response_streaming:
            make = (
                grpc.stream_stream_rpc_method_handler
                if handler.request_streaming
                else (grpc.unary_stream_rpc_method_handler)
            )
            return make(deny_stream)
        make = (
            grpc.stream_unary_rpc_method_handler
            if handler.request_streaming
            else grpc.unary_unary_rpc_method_handler
        )
        return make(deny)
