"""Signed engines: authenticity on top of the sidecar's integrity check.

The sidecar's SHA-256 proves an engine was not damaged, but whoever can write the engine folder can write a
matching sidecar, and a TensorRT plan is code (version-compatible plans carry host code). So a build machine
signs `<engine>` + `<engine>.json` with an Ed25519 key (`cellvit-trt build --sign KEY`), and a device that is
given trusted public keys (`cellvit-trt run --trusted-keys DIR`) refuses an engine without a valid signature
by one of them, before TensorRT sees a byte.

    openssl genpkey -algorithm ed25519 -out builder.pem           # private: stays on the build machine
    openssl pkey -in builder.pem -pubout -out trusted/builder.pub # public: one *.pub per trusted builder

`<engine>.sig` is JSON: the signed statement (format, key id, SHA-256 of the engine and of the sidecar file)
and the base64 signature over its canonical JSON. Rebuilding an engine rewrites the sidecar, which voids the
signature: sign again. Uses the `cryptography` package (extra `trt`).
"""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cellvit_trt.engine.errors import EngineCacheError
from cellvit_trt.errors import ConfigError, DependencyError, InputError
from cellvit_trt.io import atomic_open

SIGNATURE_FORMAT = "cellvit-trt-signature/1"
MAX_KEY_FILE = 64 << 10  # PEM keys are a few hundred bytes; refuse to read anything large


def signature_path(engine_path: str | Path) -> Path:
    engine_path = Path(engine_path)
    return engine_path.with_name(engine_path.name + ".sig")


def _crypto():
    try:
        from cryptography.exceptions import InvalidSignature
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ed25519
    except ImportError as exc:
        raise DependencyError(
            f"signed engines need the 'cryptography' package ({exc}); pip install 'cellvit-trt[trt]'"
        ) from exc
    return serialization, ed25519, InvalidSignature


def _read_key_file(path: Path) -> bytes:
    try:
        if path.stat().st_size > MAX_KEY_FILE:
            raise InputError(f"key {path}: {path.stat().st_size} bytes is too large for a PEM key")
        return path.read_bytes()
    except OSError as exc:
        raise InputError(f"key {path}: unreadable ({exc})") from exc


def key_id(public_key: Any) -> str:
    """First 16 hex digits of the SHA-256 of the raw 32-byte Ed25519 public key."""
    serialization, _, _ = _crypto()
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def _statement(engine_sha: str, sidecar_sha: str, kid: str) -> dict[str, str]:
    return {
        "format": SIGNATURE_FORMAT,
        "key_id": kid,
        "engine_sha256": engine_sha,
        "sidecar_sha256": sidecar_sha,
    }


def _canonical(statement: dict[str, str]) -> bytes:
    return json.dumps(statement, sort_keys=True, separators=(",", ":")).encode()


def load_private_key(path: str | Path) -> Any:
    """An Ed25519 private key from an unencrypted PEM (PKCS#8) file (`openssl genpkey -algorithm ed25519`)."""
    serialization, ed25519, _ = _crypto()
    path = Path(path)
    try:
        key = serialization.load_pem_private_key(_read_key_file(path), password=None)
    except (ValueError, TypeError) as exc:
        raise InputError(
            f"signing key {path}: not an unencrypted PEM private key ({exc}); make one with "
            "`openssl genpkey -algorithm ed25519 -out key.pem`"
        ) from exc
    if not isinstance(key, ed25519.Ed25519PrivateKey):
        raise InputError(f"signing key {path}: expected an Ed25519 key, got {type(key).__name__}")
    return key


def sign_engine(engine_path: str | Path, private_key_path: str | Path) -> Path:
    """Write `<engine>.sig` over the engine and its sidecar as they are now; returns its path."""
    from cellvit_trt.engine.sidecar import sidecar_path

    engine_path = Path(engine_path)
    key = load_private_key(private_key_path)
    statement = _statement(
        hashlib.sha256(engine_path.read_bytes()).hexdigest(),
        hashlib.sha256(sidecar_path(engine_path).read_bytes()).hexdigest(),
        key_id(key.public_key()),
    )
    record = {**statement, "signature": base64.b64encode(key.sign(_canonical(statement))).decode()}
    out = signature_path(engine_path)
    with atomic_open(out, "w", encoding="utf-8") as fh:
        fh.write(json.dumps(record, indent=2) + "\n")
    return out


@dataclass(frozen=True)
class TrustedKeys:
    """The Ed25519 public keys (`*.pub`, PEM) of a folder, by key id."""

    folder: Path
    keys: dict[str, Any]

    @classmethod
    def load(cls, folder: str | Path) -> TrustedKeys:
        serialization, ed25519, _ = _crypto()
        folder = Path(folder)
        if not folder.is_dir():
            raise ConfigError(f"trusted_keys: {folder} is not a folder of *.pub Ed25519 public keys")
        keys: dict[str, Any] = {}
        for path in sorted(folder.glob("*.pub")):
            try:
                key = serialization.load_pem_public_key(_read_key_file(path))
            except ValueError as exc:
                raise ConfigError(f"trusted_keys: {path} is not a PEM public key ({exc})") from exc
            if not isinstance(key, ed25519.Ed25519PublicKey):
                raise ConfigError(f"trusted_keys: {path} is not an Ed25519 key ({type(key).__name__})")
            keys[key_id(key)] = key
        if not keys:
            raise ConfigError(
                f"trusted_keys: no *.pub key in {folder}; with no trusted key no engine could ever run "
                "(leave trusted_keys unset to run unsigned engines)"
            )
        return cls(folder, keys)


def verify_engine(engine_path: Path, engine_bytes: bytes, sidecar_bytes: bytes, trusted: TrustedKeys) -> None:
    """EngineCacheError('unsigned' | 'bad-signature') unless `<engine>.sig` is a valid signature by a
    trusted key over exactly these engine and sidecar bytes."""
    _, _, invalid_signature = _crypto()
    sig_path = signature_path(engine_path)
    if not sig_path.is_file():
        raise EngineCacheError(
            f"engine {engine_path} is not signed (no {sig_path.name}) and trusted keys are configured "
            f"({trusted.folder}); sign it where it was built: cellvit-trt build ... --sign KEY",
            "unsigned",
        )
    try:
        record = json.loads(_read_key_file(sig_path).decode("utf-8"))
        statement = {k: str(record[k]) for k in ("format", "key_id", "engine_sha256", "sidecar_sha256")}
        signature = base64.b64decode(record["signature"], validate=True)
    except (InputError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise EngineCacheError(f"signature {sig_path}: unreadable ({exc})", "bad-signature") from exc
    key = trusted.keys.get(statement["key_id"])
    if statement["format"] != SIGNATURE_FORMAT or key is None:
        raise EngineCacheError(
            f"signature {sig_path}: made with key {statement['key_id']!r}, which is not among the trusted "
            f"keys in {trusted.folder} ({', '.join(sorted(trusted.keys))})",
            "bad-signature",
        )
    try:
        key.verify(signature, _canonical(statement))
    except invalid_signature as exc:
        raise EngineCacheError(
            f"signature {sig_path}: does not verify with key {statement['key_id']}", "bad-signature"
        ) from exc
    for what, data, name in (
        ("engine", engine_bytes, "engine_sha256"),
        ("sidecar", sidecar_bytes, "sidecar_sha256"),
    ):
        if hashlib.sha256(data).hexdigest() != statement[name]:
            raise EngineCacheError(
                f"signature {sig_path}: the {what} is not the one that was signed (changed after signing, or "
                "rebuilt: sign it again)",
                "bad-signature",
            )
