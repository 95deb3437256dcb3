"""Engine files with a JSON sidecar, and the checks that run before any engine is deserialised.

`model.engine` is written atomically, then `model.engine.json` (the sidecar): cache key and its fields, the
engine's SHA-256 and size, the ONNX digest and `cellvit_trt` metadata, the settings, versions, device and the
I/O tensors. A crash between the two writes leaves a sidecar that does not match the engine, which the next
check reports as tampered and a rebuild repairs. Nothing here needs TensorRT.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cellvit_trt.engine.environment import (
    REFUSED_FIELDS,
    TUNED_FIELDS,
    Environment,
    cache_key,
    explain_difference,
)
from cellvit_trt.engine.errors import EngineCacheError
from cellvit_trt.io import atomic_open, write_bytes

if TYPE_CHECKING:
    from cellvit_trt.engine.signing import TrustedKeys

log = logging.getLogger(__name__)

SIDECAR_FORMAT = "cellvit-trt-engine/1"


def sidecar_path(engine_path: str | Path) -> Path:
    engine_path = Path(engine_path)
    return engine_path.with_name(engine_path.name + ".json")


def layers_path(engine_path: str | Path) -> Path:
    engine_path = Path(engine_path)
    return engine_path.with_name(engine_path.name + ".layers.json")


def write_engine(engine_path: str | Path, plan: bytes, record: dict[str, Any]) -> dict[str, Any]:
    """Write the plan and its sidecar atomically; returns the sidecar as written.

    `record` must hold `key` and `key_fields`; the engine's hash, size and file name are added here.
    """
    engine_path = Path(engine_path)
    for required in ("key", "key_fields"):
        if required not in record:
            raise ValueError(f"write_engine: record lacks '{required}'")
    sidecar = {
        "format": SIDECAR_FORMAT,
        **record,
        "engine": {"file": engine_path.name, "sha256": hashlib.sha256(plan).hexdigest(), "size": len(plan)},
    }
    # Serialise the sidecar before touching the disk: a record that cannot be written never costs the old
    # engine.
    text = json.dumps(sidecar, indent=2) + "\n"
    write_bytes(engine_path, plan)
    with atomic_open(sidecar_path(engine_path), "w", encoding="utf-8") as fh:
        fh.write(text)
    return sidecar


def read_sidecar(engine_path: str | Path) -> dict[str, Any]:
    """The sidecar of `engine_path`, or EngineCacheError('missing' | 'no-sidecar' | 'bad-sidecar')."""
    return _read_sidecar(Path(engine_path))[0]


def _read_sidecar(engine_path: Path) -> tuple[dict[str, Any], bytes]:
    """The sidecar and the exact bytes it was parsed from (what a signature covers)."""
    side = sidecar_path(engine_path)
    if not engine_path.is_file():
        raise EngineCacheError(f"engine {engine_path}: not found", "missing")
    if not side.is_file():
        raise EngineCacheError(
            f"engine {engine_path}: no sidecar {side.name}, so nothing says what it was built from or for; "
            "engines are only trusted with the sidecar that `cellvit-trt build` writes",
            "no-sidecar",
        )
    try:
        raw = side.read_bytes()
        data = json.loads(raw.decode("utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise EngineCacheError(f"engine sidecar {side}: unreadable ({exc})", "bad-sidecar") from exc
    ok = (
        isinstance(data, dict)
        and data.get("format") == SIDECAR_FORMAT
        and isinstance(data.get("key"), str)
        and isinstance(data.get("key_fields"), dict)
        and isinstance(data.get("engine"), dict)
        and isinstance(data["engine"].get("sha256"), str)
        and isinstance(data["engine"].get("size"), int)
    )
    if not ok:
        raise EngineCacheError(
            f"engine sidecar {side}: expected format {SIDECAR_FORMAT} with key, key_fields and "
            "engine.sha256/size",
            "bad-sidecar",
        )
    return data, raw


def portable_fields(settings: dict[str, Any]) -> set[str]:
    """Environment fields an engine was built to tolerate; TensorRT itself checks them when deserialising.

    Version-compatible plans run on later TensorRT (they bring their own lean runtime), so the TensorRT
    version and CUDA major may differ; hardware-compatible plans run on other GPUs of their level
    (AMPERE_PLUS: any SM >= 8.0, checked below; SAME_COMPUTE_CAPABILITY: same SM, any model).
    """
    out: set[str] = set()
    if settings.get("version_compatible"):
        out |= {"tensorrt", "cuda_major"}
    level = settings.get("hardware_compatibility", "none")
    if level == "ampere_plus":
        out |= {"gpu_name", "compute_capability", "sm_count"}
    elif level == "same_compute_capability":
        out |= {"gpu_name", "sm_count"}
    return out


def _check_key(
    engine_path: Path,
    sidecar: dict[str, Any],
    expected_key: str | None,
    expected_fields: dict[str, Any] | None,
    environment: Environment | None,
) -> None:
    recorded = sidecar["key_fields"]
    if cache_key(recorded) != sidecar["key"]:
        raise EngineCacheError(
            f"engine sidecar {sidecar_path(engine_path)}: its key does not match its key_fields "
            "(edited by hand?)",
            "bad-sidecar",
        )
    if expected_fields is not None:
        expected_key = expected_key or cache_key(expected_fields)
    if expected_fields is not None and sidecar["key"] != expected_key:
        kind, why = explain_difference(recorded, expected_fields)
        raise EngineCacheError(f"engine {engine_path} is {kind}: {why}", kind)
    if environment is not None:
        _check_environment(engine_path, recorded, environment)
    if expected_key is not None and sidecar["key"] != expected_key:
        raise EngineCacheError(
            f"engine {engine_path} was built for another graph, settings or machine "
            f"(key {sidecar['key'][:12]}…, "
            f"expected {expected_key[:12]}…)",
            "stale",
        )


def _check_environment(engine_path: Path, recorded: dict[str, Any], environment: Environment) -> None:
    """Refuse what TensorRT itself would refuse; warn where it only warns (another GPU model, same SM)."""
    settings = recorded.get("settings") or {}
    portable = portable_fields(settings)
    here = environment.as_dict()
    refused = {k: here[k] for k in REFUSED_FIELDS if k not in portable}
    env_recorded = {k: recorded.get(k) for k in refused}
    if env_recorded != refused:
        _, why = explain_difference(env_recorded, refused)
        raise EngineCacheError(f"engine {engine_path} is foreign: {why}", "foreign")
    if settings.get("hardware_compatibility") == "ampere_plus" and _sm_major(here["compute_capability"]) < 8:
        raise EngineCacheError(
            f"engine {engine_path} is foreign: built for Ampere or newer (SM >= 8.0), this GPU is SM "
            f"{here['compute_capability']}",
            "foreign",
        )
    tuned = [
        f"{k}: engine {recorded.get(k)!r}, here {here[k]!r}"
        for k in TUNED_FIELDS
        if k not in portable and recorded.get(k) != here[k]
    ]
    if tuned:
        log.warning(
            "engine %s was built on another GPU model of the same compute capability (%s): TensorRT runs "
            "it, but tactics were timed elsewhere; rebuild it here for the best performance",
            engine_path,
            "; ".join(tuned),
        )


def _sm_major(sm: str) -> int:
    try:
        return int(str(sm).split(".", 1)[0])
    except ValueError:
        return 0


def _check_bytes(engine_path: Path, sidecar: dict[str, Any], data: bytes) -> None:
    size, sha = sidecar["engine"]["size"], sidecar["engine"]["sha256"]
    if len(data) < size:
        raise EngineCacheError(
            f"engine {engine_path} is truncated: {len(data)} of {size} bytes (an interrupted copy or write?)",
            "truncated",
        )
    digest = hashlib.sha256(data).hexdigest()
    if len(data) != size or digest != sha:
        raise EngineCacheError(
            f"engine {engine_path} is tampered or corrupt: SHA-256 {digest[:12]}… ({len(data)} bytes), "
            f"sidecar says {sha[:12]}… ({size} bytes)",
            "tampered",
        )


def load_engine_bytes(
    path: str | Path,
    expected_key: str | None = None,
    *,
    expected_fields: dict[str, Any] | None = None,
    environment: Environment | None = None,
    trusted_keys: TrustedKeys | str | Path | None = None,
) -> bytes:
    """Read an engine after checking it against its sidecar; returns exactly the bytes that were hashed.

    - `expected_key`: the key the caller computed; a different key means stale or foreign.
    - `expected_fields`: the fields behind `expected_key`, to say exactly what differs.
    - `environment`: this machine; without a key, at least refuse engines built for another GPU/TensorRT/CUDA
      (except what a version- or hardware-compatible build was made to tolerate: `portable_fields`).

    - `trusted_keys`: a folder of Ed25519 public keys (or `TrustedKeys`); the engine and its sidecar must
      carry a valid signature by one of them (`cellvit-trt build --sign`). None: signatures are not checked.

    Raises EngineCacheError, `reason` one of: missing, no-sidecar, bad-sidecar, foreign, stale, truncated,
    tampered, unsigned, bad-signature.
    Call this before `deserialize_cuda_engine`: TensorRT given a foreign or damaged plan may fail obscurely,
    and a plan is code (version-compatible plans carry host code).
    """
    return load_engine(
        path,
        expected_key,
        expected_fields=expected_fields,
        environment=environment,
        trusted_keys=trusted_keys,
    )[0]


def load_engine(
    path: str | Path,
    expected_key: str | None = None,
    *,
    expected_fields: dict[str, Any] | None = None,
    environment: Environment | None = None,
    trusted_keys: TrustedKeys | str | Path | None = None,
) -> tuple[bytes, dict[str, Any]]:
    """`load_engine_bytes` that also returns the sidecar it verified (parsed from the very bytes that were
    checked, so a sidecar swapped afterwards cannot change what the runtime does with the plan)."""
    engine_path = Path(path)
    sidecar, sidecar_raw = _read_sidecar(engine_path)
    _check_key(engine_path, sidecar, expected_key, expected_fields, environment)
    data = engine_path.read_bytes()
    _check_bytes(engine_path, sidecar, data)
    if trusted_keys is not None:
        from cellvit_trt.engine.signing import TrustedKeys, verify_engine

        keys = trusted_keys if isinstance(trusted_keys, TrustedKeys) else TrustedKeys.load(trusted_keys)
        verify_engine(engine_path, data, sidecar_raw, keys)
    return data, sidecar
