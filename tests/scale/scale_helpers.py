"""Helpers of the scale-out tests: the CLI in another interpreter, cell-set comparisons, run.json reads."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TILE = 256
# two tiles per batch and a journal commit every 2 tiles: a slide of 9-12 tiles has several commits to resume
RUN = ["--backend", "onnxruntime", "-b", "2", "--checkpoint-tiles", "2", "--outputs", "cells", "summary"]


def env(**extra: str) -> dict[str, str]:
    """The CLI's environment: the numba cache of the checkout, Ray without token authentication (each test
    cluster is private to the test and on this machine's loopback/host address)."""
    return {
        **os.environ,
        "NUMBA_CACHE_DIR": os.environ.get("NUMBA_CACHE_DIR", str(ROOT / ".numba_cache")),
        "RAY_AUTH_MODE": "disabled",
        "RAY_USAGE_STATS_ENABLED": "0",
        **extra,
    }


def cli(args: list[str], extra_env: dict[str, str] | None = None, timeout: float = 300):
    """`cellvit-trt ARGS` in a fresh interpreter (the user's view: a process of its own)."""
    code = "import sys\nfrom cellvit_trt.cli import main\nsys.exit(main(sys.argv[1:]))"
    return subprocess.run(
        [sys.executable, "-c", code, *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env(**(extra_env or {})),
        cwd=ROOT,
    )


def cells(folder: Path) -> list[dict]:
    return json.loads((folder / "cells.json").read_text())["cells"]


def cell_set(folder: Path) -> list[str]:
    """The cells without their ids, canonical and sorted (ids follow the merge's emission order)."""
    return sorted(
        json.dumps({k: v for k, v in c.items() if k != "cell_id"}, sort_keys=True) for c in cells(folder)
    )


def per_class(folder: Path) -> Counter:
    return Counter(c["type"] for c in cells(folder))


def run_json(out: Path) -> dict:
    return json.loads((out / "run.json").read_text())


def entry(out: Path, name: str) -> dict:
    return next(e for e in run_json(out)["inputs"] if e["output_name"] == name)


def leftovers(out: Path) -> list[str]:
    """Partial files: temp files of atomic writes and staged folders of an unfinished run."""
    return sorted(
        str(p.relative_to(out)) for p in out.rglob("*") if p.name.endswith(".tmp") or ".staging-" in p.name
    )
