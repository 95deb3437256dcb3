"""Streaming, atomic output files and the class table every writer shares.

    f = StreamFile(path, "w")      # a temporary file beside `path` (cellvit_trt.io.atomic_path)
    f.fh.write(...)                # as many chunks as needed
    f.close()                      # fsync + rename over `path`;  f.abort(): the temporary file is removed

Every writer has `write(batch)`, `close(**context)` and `abort()`; nothing is visible at the destination
before `close()` succeeds, and `abort()` leaves nothing behind.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import IO, Any

from cellvit_trt.classes import PANNUKE_NUCLEI, cell_color
from cellvit_trt.io import atomic_path

# A text cell starting with one of these is a formula to Excel, LibreOffice and Google Sheets (OWASP "CSV
# injection"): `=HYPERLINK(...)` as a class name in a model's metadata would run when a user opens cells.csv.
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def csv_text(value: object) -> str:
    """One quoted CSV text field, neutralised: a leading formula character gets a `'` in front (OWASP).

    Only for text: numbers are written as numbers, so a negative coordinate stays `-12.5`."""
    text = str(value)
    if text.startswith(FORMULA_START):
        text = "'" + text
    return '"' + text.replace('"', '""') + '"'


class _Abort(Exception):
    """Thrown into atomic_path to make it remove the temporary file."""


class StreamFile:
    def __init__(self, path: str | Path, mode: str = "w", **kwargs: Any) -> None:
        self.path = Path(path)
        self._cm = atomic_path(self.path)
        self.tmp = self._cm.__enter__()
        try:
            self.fh: IO[Any] = open(self.tmp, mode, **kwargs)
        except BaseException:
            self._cm.__exit__(_Abort, _Abort(), None)
            raise

    def close(self) -> None:
        if self._cm is None:
            return
        cm, self._cm = self._cm, None
        try:
            self.fh.close()
        except BaseException:
            cm.__exit__(_Abort, _Abort(), None)
            raise
        cm.__exit__(None, None, None)

    def abort(self) -> None:
        if self._cm is None:
            return
        cm, self._cm = self._cm, None
        try:
            self.fh.close()
        finally:
            cm.__exit__(_Abort, _Abort(), None)


@dataclasses.dataclass(frozen=True)
class ClassTable:
    """Class id -> name and RGB colour."""

    names: tuple[str, ...]
    colors: tuple[tuple[int, int, int], ...]

    @classmethod
    def from_meta(cls, meta: Any = None) -> ClassTable:
        names = tuple(getattr(meta, "class_names", ()) or ())
        colors = tuple(tuple(int(v) for v in c) for c in (getattr(meta, "class_colors", ()) or ()))
        if not names:
            names = PANNUKE_NUCLEI  # PanNuke (upstream section 4) when the model carries no names
        if len(colors) < len(names):
            colors = colors + tuple(cell_color(i) for i in range(len(colors), len(names)))
        return cls(names, colors)

    def name(self, type_id: int) -> str:
        return self.names[type_id] if 0 <= type_id < len(self.names) else f"class_{type_id}"

    def color(self, type_id: int) -> tuple[int, int, int]:
        return self.colors[type_id] if 0 <= type_id < len(self.colors) else (128, 128, 128)

    def type_map(self) -> dict[int, str]:
        """Upstream cells.json `type_map`: id -> name without Background."""
        return {i: n for i, n in enumerate(self.names) if i > 0}
