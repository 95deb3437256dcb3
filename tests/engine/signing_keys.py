"""Ed25519 key files for the signed-engine tests (what `openssl genpkey -algorithm ed25519` writes)."""

from __future__ import annotations

from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519


def make_key(folder: Path, name: str) -> tuple[Path, bytes]:
    """A private key file (PEM, PKCS#8, unencrypted) and the PEM of its public key."""
    key = ed25519.Ed25519PrivateKey.generate()
    folder.mkdir(parents=True, exist_ok=True)
    private = folder / f"{name}.pem"
    private.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return private, public
