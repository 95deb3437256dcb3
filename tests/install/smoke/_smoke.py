"""Helpers of the smoke scripts, which run inside a fresh venv holding the package and one extra.

Only the standard library and the installed package: these scripts are what a user would type.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

BIN = Path(sys.executable).parent


def say(msg: str) -> None:
    print(f"[smoke] {msg}", flush=True)


def cli(*args: object, code: int = 0, says: tuple[str, ...] = (), one_line: bool = False) -> str:
    """Run the installed `cellvit-trt`; check its exit code and that its output contains `says`."""
    argv = [str(BIN / "cellvit-trt"), *map(str, args)]
    p = subprocess.run(argv, capture_output=True, text=True, timeout=1800)  # a loaded machine
    out = p.stdout + p.stderr
    say(f"$ cellvit-trt {' '.join(map(str, args))}  -> exit {p.returncode}")
    print(out[-3000:], flush=True)
    if p.returncode != code:
        raise SystemExit(f"expected exit {code}, got {p.returncode}")
    missing = [s for s in says if s not in out]
    if missing:
        raise SystemExit(f"output lacks {missing}")
    if p.returncode and "Traceback" in p.stderr:
        raise SystemExit("a traceback instead of an error message")
    if one_line:  # `run` adds a summary line per batch ("1 of 1 inputs failed"): its errors are not one_line
        lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
        if len(lines) != 1:
            raise SystemExit(f"expected a one-line error, got {len(lines)} lines")
    return out


def data(name: str) -> Path | None:
    """An input prepared by scripts/check_extras.py (None, said aloud, when it is absent)."""
    value = os.environ.get(name, "")
    if not value or not Path(value).exists():
        say(f"{name} absent here ({value or 'not set'}): that check is skipped")
        return None
    return Path(value)


def must(cond: bool, what: str) -> None:
    if not cond:
        raise SystemExit(f"check failed: {what}")
    say(f"ok: {what}")
