"""Local only by default; TCP on other interfaces only with TLS and a token; requests without it refused."""

from __future__ import annotations

import subprocess
import sys

import grpc
import pytest
from tests.serve.conftest import ROOT, start_server

from cellvit_trt.serve.client import ScannerClient
from cellvit_trt.serve.security import AddressError, check_exposure, parse_listen

TOKEN = "s3cret-token-0123456789abcdef"


def test_only_local_addresses_without_tls_and_token():
    for local in ("unix:///tmp/x.sock", "127.0.0.1:50051", "localhost:1", "[::1]:50051", "127.3.2.1:9"):
        check_exposure(parse_listen(local), tls=False, token=False)
    for remote in ("0.0.0.0:50051", "192.0.2.7:50051", "[::]:50051", "scanner-pc:50051"):
        with pytest.raises(AddressError, match="needs TLS and a token"):
            check_exposure(parse_listen(remote), tls=True, token=False)
        with pytest.raises(AddressError, match="--tls-cert/--tls-key"):
            check_exposure(parse_listen(remote), tls=False, token=True)
        check_exposure(parse_listen(remote), tls=True, token=True)


def test_serve_refuses_a_public_address_without_tls(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "cellvit_trt.cli", "serve", "--listen", "0.0.0.0:0", "-o", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert proc.returncode == 2 and "needs TLS and a token" in proc.stderr


@pytest.fixture(scope="module")
def tls_server(serve_world, tmp_path_factory):
    d = tmp_path_factory.mktemp("tls")
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
         "-keyout", str(d / "key.pem"), "-out", str(d / "cert.pem")],
        check=True, capture_output=True,
    )  # fmt: skip
    (d / "token").write_text(TOKEN + "\n")
    (d / "token").chmod(0o600)
    srv = start_server(
        serve_world["model"], d / "out", "0.0.0.0:0",
        "--tls-cert", str(d / "cert.pem"), "--tls-key", str(d / "key.pem"), "--token-file", str(d / "token"),
    )  # fmt: skip
    port = srv.target.rsplit(":", 1)[1]
    yield srv, f"localhost:{port}", (d / "cert.pem").read_bytes()
    assert srv.stop() == 0, "".join(srv.log)


def test_requests_without_the_token_are_refused_on_tcp(tls_server):
    srv, target, ca = tls_server
    for token in (None, "wrong-token-0123456789abcdef"):
        with ScannerClient(target, token=token, root_certificates=ca) as client:
            for call in (client.describe, client.health):
                with pytest.raises(grpc.RpcError) as refused:
                    call()
                assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
            with pytest.raises(Exception) as stream:
                client.open_slide("no token", 500, 500, 0.25)
            assert "UNAUTHENTICATED" in str(stream.value)
    with ScannerClient(target, token=TOKEN, root_certificates=ca) as client:
        assert client.describe().backend == "onnxruntime" and client.health() == "SERVING"
    with ScannerClient(target, token=TOKEN) as plain:  # no TLS: the server does not speak plaintext
        with pytest.raises(grpc.RpcError) as no_tls:
            plain.describe(timeout=10)
        assert no_tls.value.code() == grpc.StatusCode.UNAVAILABLE
    assert not list((srv.out).glob("no*token*"))


def test_a_world_readable_token_file_is_refused(tmp_path):
    from cellvit_trt.errors import InputError
    from cellvit_trt.serve.security import read_token

    t = tmp_path / "token"
    t.write_text(TOKEN)
    t.chmod(0o644)
    with pytest.raises(InputError, match="readable by others"):
        read_token(t)
    t.chmod(0o600)
    t.write_text("short")
    with pytest.raises(InputError, match="at least 16"):
        read_token(t)


def test_stopping_the_server_mid_slide_leaves_nothing_half_written(tls_server, serve_world):
    """SIGTERM with a slide open: the stream ends UNAVAILABLE, the server exits 0, no staging folder stays."""
    import numpy as np

    srv, target, ca = tls_server
    with ScannerClient(target, token=TOKEN, root_certificates=ca) as client:
        slide = client.open_slide("cut short", 768, 576, 0.25)
        slide.send_rgb(0, 0, np.full((300, 768, 3), 220, np.uint8))
        assert srv.stop() == 0, "".join(srv.log)
        with pytest.raises(Exception) as ended:
            slide.close(timeout=30)
    assert "UNAVAILABLE" in str(ended.value)
    assert sorted(p.name for p in srv.out.iterdir()) == [".cellvit-serve.lock"]
