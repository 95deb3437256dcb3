"""A cheap look at a checkpoint file before PyTorch is imported (milliseconds, standard library only).

`torch.save` writes either a zip archive (PyTorch >= 1.6: `PK\\x03\\x04` first, a `*/data.pkl` member) or,
in the legacy format, a pickle stream (`\\x80` and a protocol byte 2-5 first). Anything else is not a
checkpoint, and saying so must not cost the 10-15 s of importing torch first.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

from cellvit_trt.errors import CheckpointError

ZIP_MAGIC = b"PK\x03\x04"
PICKLE_PROTOCOLS = range(2, 6)  # torch.save's legacy format uses protocol 2; 3-5 are valid pickles too


def check_checkpoint_file(path: str | Path) -> Path:
    """Raise CheckpointError unless `path` is a file that looks like a `torch.save` archive or pickle."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path}: file not found")
    try:
        with open(path, "rb") as fh:
            head = fh.read(4)
    except OSError as exc:
        raise CheckpointError(f"checkpoint {path}: cannot read ({exc})") from exc
    if head == ZIP_MAGIC:
        try:
            with zipfile.ZipFile(path) as zf:  # reads only the central directory
                names = zf.namelist()
        except (zipfile.BadZipFile, OSError, ValueError) as exc:
            raise CheckpointError(f"checkpoint {path}: a damaged zip archive ({exc})") from exc
        if not any(n == "data.pkl" or n.endswith("/data.pkl") for n in names):
            raise CheckpointError(
                f"checkpoint {path}: a zip archive without data.pkl; expected a file written by torch.save"
            )
        return path
    if len(head) >= 2 and head[0] == 0x80 and head[1] in PICKLE_PROTOCOLS:
        return path
    raise CheckpointError(
        f"checkpoint {path}: not a readable PyTorch file (starts with {head!r}; expected a torch.save zip "
        "archive or pickle)"
    )
