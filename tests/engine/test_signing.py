"""Signed engines (issue 12 item 6): `build --sign KEY`, `run --trusted-keys DIR`, checked on real files with
real Ed25519 keys (the `cryptography` package), before any TensorRT object sees the plan."""

from __future__ import annotations

import json

import pytest

from cellvit_trt.engine.errors import EngineCacheError
from cellvit_trt.engine.sidecar import load_engine, load_engine_bytes, sidecar_path
from cellvit_trt.engine.signing import TrustedKeys, sign_engine, signature_path
from cellvit_trt.errors import ConfigError, InputError

from .signing_keys import make_key
from .test_sidecar import PLAN, _write


@pytest.fixture
def keys(tmp_path):
    builder, builder_pub = make_key(tmp_path / "private", "builder")
    stranger, _ = make_key(tmp_path / "private", "stranger")
    trusted = tmp_path / "trusted"
    trusted.mkdir()
    (trusted / "builder.pub").write_bytes(builder_pub)
    return builder, stranger, trusted


def test_signed_engine_verifies_and_unsigned_is_refused(tmp_path, keys):
    builder, _, trusted = keys
    path = tmp_path / "m.engine"
    _write(path)
    assert load_engine_bytes(path) == PLAN  # no trusted keys: unsigned engines stay usable
    with pytest.raises(EngineCacheError, match="is not signed") as exc:
        load_engine_bytes(path, trusted_keys=trusted)
    assert exc.value.reason == "unsigned"
    assert sign_engine(path, builder) == signature_path(path)
    data, sidecar = load_engine(path, trusted_keys=trusted)
    assert data == PLAN and sidecar["metadata"] == {"model": "tiny"}
    assert load_engine_bytes(path, trusted_keys=TrustedKeys.load(trusted)) == PLAN


def test_a_key_that_is_not_trusted_is_refused(tmp_path, keys):
    _, stranger, trusted = keys
    path = tmp_path / "m.engine"
    _write(path)
    sign_engine(path, stranger)
    with pytest.raises(EngineCacheError, match="not among the trusted keys") as exc:
        load_engine_bytes(path, trusted_keys=trusted)
    assert exc.value.reason == "bad-signature"


@pytest.mark.parametrize("what", ["engine and sidecar", "sidecar", "signature", "statement"])
def test_changes_after_signing_are_refused(tmp_path, keys, what):
    builder, _, trusted = keys
    path = tmp_path / "m.engine"
    _write(path)
    sign_engine(path, builder)
    if what == "engine and sidecar":  # whoever can write the folder writes a matching sidecar too
        _write(path, plan=PLAN[::-1])
    elif what == "sidecar":
        side = json.loads(sidecar_path(path).read_text())
        side["metadata"]["model"] = "other"
        sidecar_path(path).write_text(json.dumps(side))
    else:
        sig = json.loads(signature_path(path).read_text())
        if what == "signature":
            sig["signature"] = sig["signature"][:-4] + "AAA="
        else:
            sig["engine_sha256"] = "0" * 64
        signature_path(path).write_text(json.dumps(sig))
    with pytest.raises(EngineCacheError) as exc:
        load_engine_bytes(path, trusted_keys=trusted)
    assert exc.value.reason == "bad-signature", exc.value


def test_bad_key_material_is_named(tmp_path, keys):
    builder, _, trusted = keys
    path = tmp_path / "m.engine"
    _write(path)
    with pytest.raises(ConfigError, match="no \\*.pub key"):
        TrustedKeys.load(tmp_path / "private")
    (trusted / "junk.pub").write_text("not a key")
    with pytest.raises(ConfigError, match="junk.pub is not a PEM public key"):
        TrustedKeys.load(trusted)
    with pytest.raises(InputError, match="not an unencrypted PEM private key"):
        sign_engine(path, trusted / "builder.pub")
    signature_path(path).write_text("{")
    (trusted / "junk.pub").unlink()
    with pytest.raises(EngineCacheError, match="unreadable") as exc:
        load_engine_bytes(path, trusted_keys=trusted)
    assert exc.value.reason == "bad-signature"
