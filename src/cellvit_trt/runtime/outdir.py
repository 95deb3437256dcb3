"""Output folders: safe and unique names, and which input owns a folder.

    safe_name("../x y.svs")            -> "x_y.svs"   (no separator, no leading dot, bounded length)
    unique_names(requests)             -> [(name, how)]: one folder per input, never shared
    folder_state(folder, digest)       -> "free" | "ours" | "other" | "foreign" | "unowned"
    with claim(folder, digest, input): ...   # lock, check the owner, record it; removed again if left empty

Every input's results go to `<output>/<name>/`. The name comes from the file name (or a manifest's `name`
column) made safe: no path separator, no leading dot (so `...png`, whose stem is `..`, cannot reach the
parent of `<output>`), no control characters, no Windows device name, at most 120 bytes. Names are unique per
run, case-insensitively (outputs are often copied to case-insensitive shares): inputs sharing a stem get their
suffix (`p_png`, `p_tif`), and inputs sharing stem and suffix (same name in two folders) also get a digest of
their path (`p_svs-1a2b3c4d`). The same inputs always get the same names, so `--resume` finds its folder.

A folder records its owner in `.cellvit-trt-owner.json`: the input's path and content digest
(`runtime.identity`). A run never writes into a folder owned by another input (other content), nor into a
folder holding files it did not write: planning picks `<name>-<digest8>` instead, and `claim` refuses.
"""

from __future__ import annotations

import contextlib
import datetime
import glob
import hashlib
import json
import logging
import os
import shutil
import unicodedata
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from cellvit_trt import __version__
from cellvit_trt.errors import InputError
from cellvit_trt.io import LockBusy, file_lock, remove_orphans, write_json

log = logging.getLogger(__name__)

OWNER_FILE = ".cellvit-trt-owner.json"
RESUME_DIR = ".resume"  # the resume journal (runtime.journal)
DONE_MARKER = ".done.json"  # written last: the outputs beside it are complete for its fingerprint
MAX_NAME_BYTES = 120
RESERVED = {"run.json"}  # files of the run itself in <output>
_WINDOWS_DEVICES = {"con", "prn", "aux", "nul"} | {f"{d}{i}" for d in ("com", "lpt") for i in range(1, 10)}
_KEEP = set("-_.+")


def safe_name(text: str) -> str:
    """A folder name that stays inside its parent on every common file system."""
    t = unicodedata.normalize("NFC", str(text))
    t = "".join(c if c.isalnum() or c in _KEEP else "_" for c in t)
    t = t.strip(". ")  # no ".", "..", hidden names or trailing dots (Windows drops them)
    if not t:
        t = "input"
    if t.split(".")[0].casefold() in _WINDOWS_DEVICES or t.casefold() in RESERVED:
        t = f"_{t}"
    if len(t.encode()) > MAX_NAME_BYTES:
        digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:8]
        t = t.encode()[: MAX_NAME_BYTES - 9].decode("utf-8", "ignore").rstrip(". ") + "-" + digest
    return t


def _path_digest(path: Path) -> str:
    return hashlib.sha256(str(path.resolve()).encode("utf-8", "surrogatepass")).hexdigest()[:8]


def unique_names(requests: Sequence[tuple[Path, str, str | None]]) -> list[tuple[str, str]]:
    """(path, stem, explicit name or None) per input -> (folder name, how it was derived), unique
    case-insensitively. Three levels, raised only for inputs whose name is shared: stem, stem + suffix,
    stem + suffix + path digest."""

    def at(i: int, level: int) -> tuple[str, str]:
        path, stem, explicit = requests[i]
        base = safe_name(explicit) if explicit else safe_name(stem)
        how = "the manifest's name column" if explicit else "the file name"
        suffix = path.name[len(stem) :].lstrip(".")
        if level >= 1 and suffix and not explicit:
            base, how = safe_name(f"{base}_{suffix}"), "the file name with its suffix (the stem is shared)"
        if level >= 2:
            base = f"{base}-{_path_digest(path)}"
            how += ", and a digest of its path (the name is shared by inputs in other folders)"
        return base, how

    levels = [0] * len(requests)
    while True:
        names = [at(i, lv)[0].casefold() for i, lv in enumerate(levels)]
        groups: dict[str, list[int]] = {}
        for i, n in enumerate(names):
            groups.setdefault(n, []).append(i)
        bump = [i for g in groups.values() if len(g) > 1 for i in g if levels[i] < 2]
        if not bump:
            break
        for i in bump:
            levels[i] += 1
    out, seen = [], set()
    for i, lv in enumerate(levels):
        name, how = at(i, lv)
        k = 1
        while name.casefold() in seen:  # same resolved path twice, or a digest collision
            name, k = f"{at(i, lv)[0]}-{k}", k + 1
        seen.add(name.casefold())
        out.append((name, how))
    return out


def read_owner(folder: Path) -> dict | None:
    try:
        data = json.loads((folder / OWNER_FILE).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and "digest" in data else None


def _package_names() -> set[str]:
    from cellvit_trt.runtime.writers import OUTPUT_FILES

    return {OWNER_FILE, RESUME_DIR, DONE_MARKER} | {n for names in OUTPUT_FILES.values() for n in names}


def foreign_entries(folder: Path) -> list[str]:
    """Names in `folder` that this package does not write (its outputs, bookkeeping and temp files)."""
    own = _package_names()
    return sorted(p.name for p in folder.iterdir() if p.name not in own and not p.name.endswith(".tmp"))


def folder_state(folder: Path, digest: str) -> str:
    """The folder for content `digest`: "free" (absent or empty), "ours" (this content's), "other"
    (another content's), "foreign" (holds files this package does not write), "unowned" (outputs without
    an owner record: an older version's, input unknown)."""
    if not folder.exists():
        return "free"
    if not folder.is_dir():
        return "foreign"
    owner = read_owner(folder)
    if owner is not None and owner["digest"] != digest:
        return "other"
    if foreign_entries(folder):
        return "foreign"
    if owner is not None:
        return "ours"
    return "unowned" if any(folder.iterdir()) else "free"


def describe_owner(folder: Path) -> str:
    if folder.exists() and not folder.is_dir():
        return f"{folder} is a file"
    owner = read_owner(folder)
    foreign = foreign_entries(folder) if folder.is_dir() else []
    if foreign:
        shown = ", ".join(foreign[:3]) + (", ..." if len(foreign) > 3 else "")
        return f"{folder} holds files cellvit-trt does not write ({shown})"
    if owner is not None:
        return f"{folder} belongs to {owner.get('input')} (content {str(owner['digest'])[:8]})"
    return f"{folder} holds results of an unknown input (no owner record)"


def staging_dir(folder: Path) -> Path:
    """A fresh hidden sibling where a run writes its whole set before `io.replace_dir` publishes it."""
    return folder.parent / f".{folder.name}.staging-{os.getpid()}-{os.urandom(4).hex()}"


def _recover(folder: Path) -> None:
    """Under the folder's lock: what a killed run left beside it. A complete staged set (it has its done
    marker) or the previous set moved aside replaces a missing folder; every other leftover is removed."""
    pattern = glob.escape(f".{folder.name}.")
    staged = sorted(folder.parent.glob(pattern + "staging-*"))
    old = sorted(folder.parent.glob(pattern + "old-*"))
    if not folder.exists():
        for candidate in [s for s in staged if (s / DONE_MARKER).is_file()] + old:
            os.rename(candidate, folder)
            log.warning("%s: restored from %s, left by an interrupted run", folder, candidate.name)
            break
    for leftover in staged + old:
        if leftover.exists():
            shutil.rmtree(leftover, ignore_errors=True)
            log.info("%s: removed %s, left by an interrupted run", folder, leftover.name)
    for orphan in remove_orphans(folder) + remove_orphans(folder / RESUME_DIR):
        log.info("%s: removed the temporary file %s, left by an interrupted run", folder, orphan.name)


def _lock_path(folder: Path) -> Path:
    return folder.parent / f".{folder.name}"


def write_owner(folder: Path, digest: str, input_path: Path) -> None:
    """The owner record: which input (path and content digest) this folder's results belong to."""
    write_json(
        folder / OWNER_FILE,
        {
            "input": str(Path(input_path).resolve()),
            "digest": digest,
            "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "package_version": __version__,
        },
    )


@contextlib.contextmanager
def claim(folder: Path, digest: str, input_path: Path, replace_other: bool = False) -> Iterator[None]:
    """Hold `folder` for one input's run: lock it against concurrent runs, refuse it when it belongs to
    another input, record the owner. A folder this claim created and left without results is removed.

    replace_other=True: the caller owns the folder whatever input wrote it before (the demo and the bench
    rewrite their own folders); the old owner record stays until the new set replaces the old one. A folder
    holding files the package does not write is refused even then."""
    folder = Path(folder)
    try:
        with file_lock(_lock_path(folder), blocking=False):
            _recover(folder)
            state = folder_state(folder, digest)
            if state not in ("free", "ours") and not (replace_other and state in ("other", "unowned")):
                raise InputError(
                    f"{input_path}: output folder refused: {describe_owner(folder)}; nothing was overwritten "
                    "(run the batch again to get a new folder name, or choose another -o)"
                )
            created = not folder.exists()
            if read_owner(folder) is None:
                folder.mkdir(parents=True, exist_ok=True)
                write_owner(folder, digest, input_path)
            try:
                yield
            except BaseException:
                if created and folder.is_dir() and not any(p.name != OWNER_FILE for p in folder.iterdir()):
                    (folder / OWNER_FILE).unlink(missing_ok=True)
                    with contextlib.suppress(OSError):
                        folder.rmdir()
                raise
    except LockBusy as exc:
        raise InputError(
            f"{input_path}: output folder {folder} is being written by another cellvit-trt run "
            f"({exc}); wait for it to finish or choose another -o"
        ) from exc


def choose_folder(
    output: Path, name: str, digest_of: Callable[[], str], taken: set[str]
) -> tuple[str, str | None]:
    """`name` when its folder is free or this input's, else `<name>-<digest8>` (then 16, 64 hex digits):
    (name, why the planned name was not used, or None). `digest_of()` is only called for existing folders
    and on a conflict, so planning a fresh output reads no input."""

    def usable(n: str) -> bool:
        folder = output / n
        if n.casefold() in taken:
            return False
        return not folder.exists() or folder_state(folder, digest_of()) in ("free", "ours")

    if usable(name):
        return name, None
    why = describe_owner(output / name) if (output / name).exists() else f"{name} is another input's"
    digest = digest_of()
    for n in (8, 16, 64):
        alt = f"{name}-{digest[:n]}"
        if usable(alt):
            return alt, why
    raise InputError(f"{output / name}: no free output folder for this input ({why})")
