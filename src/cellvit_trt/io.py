"""Atomic file writes: nothing already written is lost or left half-written; and an advisory file lock.

Write to a temporary file in the destination folder, fsync, then `os.replace` (atomic on POSIX and Windows).
Temporary files are named `.<name>.<8 random characters>.tmp` (TEMP_PATTERN): a process killed with SIGKILL
cannot remove its own, so the next run of the same output removes them (`remove_orphans`).

    with file_lock(path):                   # exclusive lock on `path.lock`; blocking=False raises when busy
    replace_dir(new, dest)                  # a staged folder replaces `dest` whole (atomic swap on Linux)
    remove_orphans(folder, names=None, min_age_s=0)   # temp files of killed writers, by their name pattern
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from cellvit_trt.errors import InputError

TEMP_PATTERN = re.compile(r"^\.(?P<name>.+)\.[a-z0-9_]{8}\.tmp$")  # tempfile.mkstemp's 8 characters


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success it replaces `path`, on error it is removed."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise InputError(f"output {path}: cannot write there ({exc.strerror or exc})") from exc
    os.close(fd)
    tmp_path = Path(tmp)
    # mkstemp creates 0600 files; outputs get what a plain open() would give (0666 minus the umask).
    os.chmod(tmp_path, 0o666 & ~_umask())
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp_path, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        raise


@contextlib.contextmanager
def atomic_open(path: str | Path, mode: str = "w", **kwargs: Any) -> Iterator[IO[Any]]:
    """Open a temporary file for writing that atomically becomes `path` when the block succeeds."""
    if "w" not in mode:
        raise ValueError(f"atomic_open: mode must write, got {mode!r}")
    with atomic_path(path) as tmp, open(tmp, mode, **kwargs) as fh:
        yield fh


def remove_orphans(folder: str | Path, names: set[str] | None = None, min_age_s: float = 0.0) -> list[Path]:
    """Remove the temporary files `atomic_path` left in `folder` (not recursive) when its process was killed.

    Only names of this package's pattern (`.<name>.<8 characters>.tmp`), only for destinations in `names` when
    given, only files older than `min_age_s` (a concurrent writer's file is younger). Call it where no other
    process writes (under the folder's lock) or with an age margin. Returns what was removed."""
    import time

    removed = []
    try:
        entries = list(Path(folder).iterdir())
    except OSError:
        return removed
    now = time.time()
    for p in entries:
        m = TEMP_PATTERN.match(p.name)
        if m is None or (names is not None and m.group("name") not in names) or not p.is_file():
            continue
        with contextlib.suppress(OSError):
            if now - p.stat().st_mtime >= min_age_s:
                p.unlink()
                removed.append(p)
    return removed


def write_json(path: str | Path, obj: Any, indent: int | None = 2) -> None:
    with atomic_open(path, "w", encoding="utf-8") as fh:
        json.dump(obj, fh, indent=indent)
        fh.write("\n")


def write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_open(path, "wb") as fh:
        fh.write(data)


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


class LockBusy(BlockingIOError):
    """`file_lock(..., blocking=False)` found the lock held by another process."""


@contextlib.contextmanager
def file_lock(path: str | Path, blocking: bool = True) -> Iterator[None]:
    """An exclusive advisory lock on `path + '.lock'` (fcntl; msvcrt on Windows).

    blocking=True waits until it is free; blocking=False raises LockBusy at once when another process
    holds it.
    The lock file stays (removing it would race with a waiting process)."""
    lock = Path(str(path) + ".lock")
    lock.parent.mkdir(parents=True, exist_ok=True)
    with open(lock, "a+b") as fh:
        try:
            import fcntl
        except ImportError:  # Windows
            import msvcrt

            fh.seek(0)
            try:
                msvcrt.locking(fh.fileno(), msvcrt.LK_LOCK if blocking else msvcrt.LK_NBLCK, 1)
            except OSError as exc:
                raise LockBusy(f"{lock} is held by another process") from exc
            try:
                yield
            finally:
                fh.seek(0)
                msvcrt.locking(fh.fileno(), msvcrt.LK_UNLCK, 1)
            return
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except BlockingIOError as exc:
            raise LockBusy(f"{lock} is held by another process") from exc
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths atomically (Linux renameat2 RENAME_EXCHANGE); False where the OS or file system
    cannot, so the caller falls back to two renames."""
    if not sys.platform.startswith("linux"):
        return False
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):  # glibc < 2.28, musl without it
        return False
    at_fdcwd, rename_exchange = -100, 2
    rc = renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange)
    return rc == 0


def _fsync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError, AttributeError):  # Windows cannot open a directory
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def replace_dir(new: str | Path, dest: str | Path) -> None:
    """Make the folder `new` appear at `dest` as a whole and remove what `dest` held.

    Atomic where the OS can swap two directories (Linux); elsewhere `dest` is first renamed to a hidden
    `.<dest>.old-*` sibling: a kill between the two renames leaves no `dest`, and the next run of that
    folder puts a complete set back (`runtime.outdir.claim`)."""
    new, dest = Path(new), Path(dest)
    if not dest.exists():
        os.rename(new, dest)
    elif _exchange(new, dest):
        shutil.rmtree(new, ignore_errors=True)  # `new` now holds the previous contents
    else:
        old = dest.parent / f".{dest.name}.old-{os.getpid()}-{os.urandom(4).hex()}"
        os.rename(dest, old)
        os.rename(new, dest)
        shutil.rmtree(old, ignore_errors=True)
    _fsync_dir(dest.parent)
