"""Where a slide's files go: a folder named after the slide id that no id can escape, filled atomically.

    name = folder_name(slide_id)          # "2024-05-01_slot-3" ; "../etc" -> "_etc-1f3a9c0b2d4e"
    stage = Staging(out_root, name)       # writers fill stage.path (a hidden folder beside the final one)
    stage.commit(overwrite=False)         # rename into <out_root>/<name>; stage.discard() removes it

A slide's outputs appear under their final name only when every file is complete (one rename of the folder),
so a failed, discarded or interrupted slide leaves nothing half-written. `clean_stale(out_root)` removes the
staging folders of a server that was killed (called at start, under the server's lock on the folder).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import uuid
from pathlib import Path

from cellvit_trt.errors import InputError

MAX_ID_CHARS = 200
STAGING_MARK = ".serve-staging-"
OLD_MARK = ".serve-old-"


def folder_name(slide_id: str) -> str:
    """A folder name for `slide_id` inside the output folder (`runtime.outdir.safe_name`: no separator, no
    leading dot, no device name, bounded). Ids that are already safe keep their name; others get 12 hex digits
    of the id's SHA-256 appended, so two different ids never share a folder."""
    from cellvit_trt.runtime.outdir import safe_name

    if not slide_id or not slide_id.strip():
        raise InputError("slide_id: empty; expected the scanner's slide name or barcode")
    if len(slide_id) > MAX_ID_CHARS:
        raise InputError(f"slide_id: {len(slide_id)} characters, expected at most {MAX_ID_CHARS}")
    if "\x00" in slide_id:
        raise InputError("slide_id: contains a NUL character")
    safe = safe_name(slide_id)
    if safe == slide_id:
        return safe
    digest = hashlib.sha256(slide_id.encode("utf-8", "surrogatepass")).hexdigest()[:12]
    return f"{safe[:100]}-{digest}"


class Staging:
    """A hidden sibling folder that becomes `<root>/<name>` at commit."""

    def __init__(self, root: Path, name: str) -> None:
        self.root, self.name = Path(root), name
        self.final = self.root / name
        self.path = self.root / f".{name}{STAGING_MARK}{uuid.uuid4().hex[:12]}"
        if self.final.resolve().parent != self.root.resolve():
            raise InputError(f"slide_id: folder {name!r} would leave the output folder")  # defence in depth
        self.path.mkdir(parents=True)

    def commit(self, overwrite: bool) -> Path:
        """Move the complete folder into place; an existing result is replaced only with `overwrite`."""
        old = None
        if self.final.exists():
            if not overwrite:
                raise FileExistsError(
                    f"{self.final} already holds a result for this slide (open with overwrite to replace it)"
                )
            old = self.root / f".{self.name}{OLD_MARK}{uuid.uuid4().hex[:12]}"
            os.rename(self.final, old)
        try:
            os.rename(self.path, self.final)
        except OSError:
            if old is not None:
                os.rename(old, self.final)  # put the previous result back
            raise
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        return self.final

    def discard(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


def clean_stale(root: Path) -> list[Path]:
    """Remove staging folders left by a server that was killed; returns what was removed."""
    removed = []
    for p in Path(root).glob(".*"):
        if p.is_dir() and (STAGING_MARK in p.name or OLD_MARK in p.name):
            shutil.rmtree(p, ignore_errors=True)
            removed.append(p)
    return removed
