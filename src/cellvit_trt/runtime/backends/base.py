"""The runner interface every backend implements (Polygraphy `BaseRunner` style).

    with open_backend("model.onnx") as backend:        # activate() / deactivate()
        maps = backend.infer(images)    # uint8[N,H,W,3] -> {fg, hv, type_map, tissue_logits, [tokens]}

Constructors only store arguments; sessions, engines, streams and buffers are acquired in `activate()` and
released in `deactivate()`. The outputs follow docs/ARCHITECTURE.md's deployment-graph table exactly:

| name | dtype, shape |
|---|---|
| fg | uint8 [N,H,W] |
| hv | float16 [N,2,H,W] (float32 if the graph says so) |
| type_map | uint8 [N,H,W] |
| tissue_logits | float32 [N,T] |
| tokens (optional) | float16 [N,E,H/16,W/16] |

The asynchronous form `handle = submit(images)` / `result(handle)` lets a caller keep `max_in_flight` batches
queued; synchronous backends compute in `submit`, GPU backends return as soon as the work is enqueued.
Returned arrays are owned by the caller (never views of reused buffers).
"""

from __future__ import annotations

import json
import math
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from cellvit_trt.errors import InputError

MAP_OUTPUTS = ("fg", "hv", "type_map", "tissue_logits")
OPTIONAL_OUTPUTS = ("tokens",)


@dataclass(frozen=True)
class ModelMeta:
    """What the runtime needs to know about a deployment graph (its `cellvit_trt` metadata, or defaults)."""

    tile_size: int
    name: str = "unknown"
    class_names: tuple[str, ...] = ()
    class_colors: tuple[tuple[int, int, int], ...] = ()
    tissue_names: tuple[str, ...] = ()
    magnification: float = 40.0
    target_mpp: float = 0.25
    overlap: int = 64
    precision: str = "fp32"
    raw: dict[str, Any] = field(default_factory=dict, compare=False)

    @classmethod
    def from_json(cls, text: str | dict[str, Any] | None, tile_size: int, where: str) -> ModelMeta:
        """Parse and check the `cellvit_trt` metadata of a graph or engine, once, where a backend reads it.

        A wrong field is an InputError naming the field, the value and what was expected, never a traceback
        later in a writer (a colour that is not RGB, a `target_mpp` that is not a number, ...)."""
        if not text:
            return cls(tile_size=tile_size)
        try:
            d = json.loads(text) if isinstance(text, str) else text
        except json.JSONDecodeError as exc:
            raise InputError(f"{where}: metadata 'cellvit_trt' is not valid JSON ({exc})") from exc
        if not isinstance(d, dict):
            raise InputError(
                f"{where}: metadata 'cellvit_trt' is a JSON {type(d).__name__}, expected an object"
            )
        # Keys may sit at top level or under "model" (ModelInfo.to_metadata); first hit wins.
        flat = {**(d.get("model") if isinstance(d.get("model"), dict) else {}), **d}
        field_ = _MetaFields(flat, where)
        magnification = field_.number("magnification", 40.0)
        tile = field_.integer("tile_size", tile_size, low=1)
        return cls(
            tile_size=tile,
            name=field_.text(("name", "variant", "arch"), "unknown"),
            class_names=field_.names(("nuclei_names", "class_names")),
            class_colors=field_.colors(("nuclei_colors", "class_colors")),
            tissue_names=field_.names(("tissue_names",)),
            magnification=magnification,
            target_mpp=field_.number(("target_mpp", "mpp"), 0.25 if magnification >= 40 else 0.5),
            overlap=field_.integer("overlap", 64, low=0, high=tile - 1),
            precision=field_.choice("precision", ("fp32", "fp16", "int8", "mixed"), "fp32"),
            raw=dict(d),
        )


class _MetaFields:
    """Typed reads of metadata fields; each failure names the field, its value and what was expected."""

    MAX_NAME = 200  # characters of a class or tissue name

    def __init__(self, flat: dict[str, Any], where: str) -> None:
        self.flat, self.where = flat, where

    def _pick(self, keys: str | tuple[str, ...]) -> tuple[str, Any]:
        keys = (keys,) if isinstance(keys, str) else keys
        return next(((k, self.flat[k]) for k in keys if self.flat.get(k) is not None), (keys[0], None))

    def _bad(self, key: str, value: Any, expected: str) -> InputError:
        shown = repr(value)
        shown = shown if len(shown) <= 80 else shown[:77] + "..."
        return InputError(f"{self.where}: metadata field '{key}' = {shown}; expected {expected}")

    def number(self, keys: str | tuple[str, ...], default: float) -> float:
        key, v = self._pick(keys)
        if v is None:
            return default
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
            raise self._bad(key, v, "a positive number")
        return float(v)

    def integer(self, key: str, default: int, low: int, high: int | None = None) -> int:
        _, v = self._pick(key)
        if v is None:
            return default
        ok = isinstance(v, int) and not isinstance(v, bool) and v >= low and (high is None or v <= high)
        if not ok:
            raise self._bad(key, v, f"an integer >= {low}" + (f" and <= {high}" if high is not None else ""))
        return int(v)

    def text(self, keys: tuple[str, ...], default: str) -> str:
        key, v = self._pick(keys)
        if v is None:
            return default
        if not isinstance(v, str):
            raise self._bad(key, v, "a string")
        return v

    def choice(self, key: str, choices: tuple[str, ...], default: str) -> str:
        _, v = self._pick(key)
        if v is None:
            return default
        if v not in choices:
            raise self._bad(key, v, f"one of {', '.join(choices)}")
        return str(v)

    def names(self, keys: tuple[str, ...]) -> tuple[str, ...]:
        key, v = self._pick(keys)
        if v is None:
            return ()
        if not isinstance(v, (list, tuple)) or not all(
            isinstance(n, str) and 0 < len(n) <= self.MAX_NAME for n in v
        ):
            raise self._bad(key, v, f"a list of names (strings of 1-{self.MAX_NAME} characters)")
        return tuple(v)

    def colors(self, keys: tuple[str, ...]) -> tuple[tuple[int, int, int], ...]:
        key, v = self._pick(keys)
        if v is None:
            return ()

        def rgb(c: Any) -> bool:
            return (
                isinstance(c, (list, tuple))
                and len(c) == 3
                and all(isinstance(x, int) and not isinstance(x, bool) and 0 <= x <= 255 for x in c)
            )

        if not isinstance(v, (list, tuple)) or not all(rgb(c) for c in v):
            raise self._bad(key, v, "a list of [r, g, b] colours, integers 0-255")
        return tuple(tuple(int(x) for x in c) for c in v)  # type: ignore[misc]


def check_images(images: Any, tile_size: int, max_batch: int, where: str = "backend") -> np.ndarray:
    """The input boundary: uint8[N,H,W,3] with H = W = tile_size and 1 <= N <= max_batch, C-contiguous."""
    if not isinstance(images, np.ndarray):
        raise InputError(f"{where}: tensor 'image' must be a numpy array, got {type(images).__name__}")
    want = f"uint8[N,{tile_size},{tile_size},3] with 1 <= N <= {max_batch}"
    got = f"{images.dtype}{list(images.shape)}"
    if (
        images.dtype != np.uint8
        or images.ndim != 4
        or images.shape[3] != 3
        or images.shape[1] != tile_size
        or images.shape[2] != tile_size
        or not 1 <= images.shape[0] <= max_batch
    ):
        raise InputError(f"{where}: tensor 'image': got {got}, expected {want}")
    return np.ascontiguousarray(images)


class Backend:
    """Base runner. Subclasses implement `_activate`, `_deactivate` and `_infer` (or `_submit`/`_result`)."""

    kind = "base"
    max_in_flight = 1

    def __init__(self, name: str):
        self.name = name
        self.is_active = False
        self.meta: ModelMeta | None = None
        self.max_batch = 0
        self.tile_size = 0
        self.output_names: tuple[str, ...] = ()
        self.last_timings: dict[str, float] = {}
        self._pending: deque[tuple[int, dict[str, np.ndarray]]] = deque()
        self._seq = 0

    # ---- lifecycle --------------------------------------------------------------------------------------
    def activate(self) -> Backend:
        if not self.is_active:
            self._activate()
            self.is_active = True
        return self

    def deactivate(self) -> None:
        if self.is_active:
            self.is_active = False
            self._pending.clear()
            self._deactivate()

    def __enter__(self) -> Backend:
        return self.activate()

    def __exit__(self, *exc: object) -> None:
        self.deactivate()

    # ---- inference --------------------------------------------------------------------------------------
    def infer(self, images: np.ndarray) -> dict[str, np.ndarray]:
        """Run one batch synchronously."""
        return self.result(self.submit(images))

    def submit(self, images: np.ndarray) -> int:
        """Queue one batch; returns a handle for `result`. At most `max_in_flight` handles may be pending."""
        self._require_active()
        images = check_images(images, self.tile_size, self.max_batch, self.name)
        return self._submit(images)

    def result(self, handle: int) -> dict[str, np.ndarray]:
        """Wait for a submitted batch; handles must be collected in submission order."""
        self._require_active()
        return self._result(handle)

    # ---- defaults for synchronous backends ----------------------------------------------------------------
    def _submit(self, images: np.ndarray) -> int:
        t0 = time.perf_counter()
        out = self._infer(images)
        self.last_timings = {"compute": time.perf_counter() - t0}
        self._seq += 1
        self._pending.append((self._seq, out))
        return self._seq

    def _result(self, handle: int) -> dict[str, np.ndarray]:
        if not self._pending or self._pending[0][0] != handle:
            raise RuntimeError(
                f"{self.name}: results must be collected in submission order (handle {handle})"
            )
        return self._pending.popleft()[1]

    def _activate(self) -> None:  # pragma: no cover - interface
        raise NotImplementedError

    def _deactivate(self) -> None:  # pragma: no cover - interface
        raise NotImplementedError

    def _infer(self, images: np.ndarray) -> dict[str, np.ndarray]:  # pragma: no cover - interface
        raise NotImplementedError

    def _require_active(self) -> None:
        if not self.is_active:
            raise RuntimeError(f"{self.name}: backend is not active; use `with backend:` or call activate()")

    def describe(self) -> dict[str, Any]:
        return {
            "backend": self.kind,
            "name": self.name,
            "max_batch": self.max_batch,
            "tile_size": self.tile_size,
            "outputs": list(self.output_names),
        }


def normalise_outputs(raw: dict[str, np.ndarray], where: str) -> dict[str, np.ndarray]:
    """Coerce a graph's outputs to the contract dtypes (a no-op for conforming graphs) and check the set."""
    missing = [k for k in MAP_OUTPUTS if k not in raw]
    if missing:
        raise InputError(
            f"{where}: outputs {missing} missing; a deployment graph returns {list(MAP_OUTPUTS)} "
            f"(+ optional {list(OPTIONAL_OUTPUTS)}), got {sorted(raw)}"
        )
    out = {
        "fg": np.asarray(raw["fg"]).astype(np.uint8, copy=False),
        "hv": np.asarray(raw["hv"])
        if raw["hv"].dtype in (np.float16, np.float32)
        else np.asarray(raw["hv"], dtype=np.float32),
        "type_map": np.asarray(raw["type_map"]).astype(np.uint8, copy=False),
        "tissue_logits": np.asarray(raw["tissue_logits"]).astype(np.float32, copy=False),
    }
    if "tokens" in raw:
        out["tokens"] = np.asarray(raw["tokens"])
    return out
