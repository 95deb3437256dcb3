"""Planning a run: input specs -> the inputs, each with its format and its own output folder.

    plan = plan_inputs(["slides/", "extra/*.svs", "cases.csv"], output=Path("results"))
    plan.items      # [PlannedInput(index, path, given, format, name, derived, out_dir, digest, error)]
    plan.ignored    # [Ignored(path, reason)]: what a folder or glob held that is not an input

A spec is a file, a folder (its slides and images, not recursive; DICOM folders are one slide each), a glob
(`slides/**/*.svs`, recursive with `**`) or a manifest: a `.txt`/`.lst` file with one path per line, or a
`.csv`/`.tsv` file whose `path` (or `input`, `file`, `slide`, `image`, `filename`) column names the inputs and
whose optional `name` (or `output`) column names their output folders; without such a header the first
column is the path. `#` starts a comment line; relative paths are relative to the manifest's folder.

Inputs are recognised by content (`sources.detect`: OpenSlide's `detect_format`, then magic bytes), so a
folder's `.svs`, `.ndpi`, `.mrxs`, `.dcm`, OME-TIFF... are found whatever their suffix; hidden files, files
no reader knows and the image files a Hamamatsu `.vms` index refers to are listed in `ignored`. A file named
explicitly is always an input (it fails with its own error when no reader opens it). An input given twice is
run once. A spec that names nothing (missing path, empty folder, glob without match) is a failed item with
its error, so that one bad spec does not stop the others.

Output folders: `runtime.outdir` (safe, unique, owned). This module is the planning stage shared by the local
batch (`runtime.batch`) and any scale-out runner: the plan is plain data (see `PlannedInput.to_dict`).
"""

from __future__ import annotations

import configparser
import csv
import dataclasses
import glob
import io
import logging
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from cellvit_trt.errors import InputError
from cellvit_trt.runtime.identity import content_digest
from cellvit_trt.runtime.outdir import choose_folder, unique_names
from cellvit_trt.runtime.sources.detect import detect, suffix_of

log = logging.getLogger(__name__)

MANIFEST_SUFFIXES = (".txt", ".lst", ".csv", ".tsv")
MANIFEST_MAX_BYTES = 16 << 20
PATH_COLUMNS = ("path", "input", "file", "slide", "image", "filename")
NAME_COLUMNS = ("name", "output", "output_name")
_GLOB_CHARS = set("*?[")


@dataclasses.dataclass(frozen=True)
class Entry:
    path: Path
    given: str  # the spec it came from (a path, folder, glob or manifest line)
    format: str = ""
    name: str | None = None  # output folder name from a manifest
    error: str | None = None  # a spec that names nothing: the item fails with this message


@dataclasses.dataclass(frozen=True)
class Ignored:
    path: str
    reason: str


@dataclasses.dataclass
class Expansion:
    entries: list[Entry] = dataclasses.field(default_factory=list)
    ignored: list[Ignored] = dataclasses.field(default_factory=list)


@dataclasses.dataclass(frozen=True)
class PlannedInput:
    index: int
    path: Path
    given: str
    format: str
    name: str  # output folder name under the run's output
    derived: str  # how `name` was derived, in words
    out_dir: Path
    digest: str | None = None  # content digest, when planning needed it (a folder existed)
    error: str | None = None  # the item fails with this message without running

    def to_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "input": str(self.path),
            "given": self.given,
            "format": self.format,
            "output": str(self.out_dir),
            "output_name": self.name,
            "output_name_from": self.derived,
        }


@dataclasses.dataclass
class Plan:
    output: Path
    items: list[PlannedInput]
    ignored: list[Ignored]


# ---- expansion ---------------------------------------------------------------------------------------------
def _is_manifest(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in MANIFEST_SUFFIXES and detect(path).kind is None


def read_manifest(path: Path) -> list[tuple[str, str | None]]:
    """(path spec, output name or None) per row of a TXT/LST or CSV/TSV manifest."""
    size = path.stat().st_size
    if size > MANIFEST_MAX_BYTES:
        raise InputError(f"manifest {path}: {size} bytes, more than the {MANIFEST_MAX_BYTES} allowed")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"manifest {path}: not readable as UTF-8 text ({exc})") from exc
    suffix = path.suffix.lower()
    if suffix in (".txt", ".lst"):
        lines = (line.strip() for line in text.splitlines())
        return [(line, None) for line in lines if line and not line.startswith("#")]
    rows = [
        [c.strip() for c in r]
        for r in csv.reader(io.StringIO(text), delimiter="\t" if suffix == ".tsv" else ",")
        if r and any(c.strip() for c in r) and not r[0].lstrip().startswith("#")
    ]
    if not rows:
        return []
    header = [c.casefold() for c in rows[0]]
    col = next((header.index(c) for c in PATH_COLUMNS if c in header), None)
    if col is None:
        return [(r[0], None) for r in rows if r[0]]
    name_col = next((header.index(c) for c in NAME_COLUMNS if c in header), None)
    out = []
    for i, r in enumerate(rows[1:], start=2):
        if col >= len(r) or not r[col]:
            raise InputError(f"manifest {path}, row {i}: column {rows[0][col]!r} is empty")
        name = r[name_col] if name_col is not None and name_col < len(r) and r[name_col] else None
        out.append((r[col], name))
    return out


def _vms_parts(vms: Path) -> set[str]:
    """File names a Hamamatsu VMS/VMU index refers to (its JPEG parts are not inputs of their own)."""
    cp = configparser.ConfigParser(strict=False, interpolation=None)
    try:
        cp.read_string(vms.read_text(errors="replace"))
    except (OSError, configparser.Error):
        return set()
    keys = ("imagefile", "mapfile", "optimisationfile", "macroimage")
    return {
        v.strip()
        for s in cp.sections()
        for k, v in cp.items(s)
        if k.split("(")[0].startswith(keys) and v.strip()
    }


def _folder(folder: Path, given: str, out: Expansion) -> None:
    children = sorted(folder.iterdir())
    parts = {n for p in children if p.suffix.lower() in (".vms", ".vmu") for n in _vms_parts(p)}
    mirax = {p.stem for p in children if p.suffix.lower() == ".mrxs"}
    found = 0
    for p in children:
        if p.name.startswith("."):
            continue  # hidden: the package's own temp files, OS metadata (.DS_Store)
        if p.name in parts:
            out.ignored.append(Ignored(str(p), "part of a Hamamatsu VMS/VMU slide in this folder"))
            continue
        if p.is_dir() and p.name in mirax:
            out.ignored.append(Ignored(str(p), f"data of the MIRAX slide {p.name}.mrxs"))
            continue
        found_kind = detect(p)
        if found_kind.kind is None:
            reason = (
                "a folder (folders are not searched: give it, or a glob such as dir/**/*.svs)"
                if p.is_dir()
                else "not a slide or image (content and suffix not recognised)"
            )
            out.ignored.append(Ignored(str(p), reason))
            continue
        out.entries.append(Entry(p, given, found_kind.format))
        found += 1
    if not found:
        out.entries.append(
            Entry(folder, given, "folder", error=f"{folder}: no image files or slides in this folder")
        )


def _spec(spec: str, base: Path | None, out: Expansion, name: str | None, in_manifest: bool) -> None:
    path = Path(spec).expanduser()
    if base is not None and not path.is_absolute():
        path = base / path
    given = spec if base is None else f"{spec} (manifest line)"
    if path.is_dir():
        if detect(path).kind == "slide":
            out.entries.append(Entry(path, given, "dicom", name))
        else:
            _folder(path, given, out)
        return
    if path.is_file():
        if not in_manifest and _is_manifest(path):
            for row_spec, row_name in read_manifest(path):
                _spec(row_spec, path.parent, out, row_name, True)
            return
        out.entries.append(Entry(path, given, detect(path).format, name))
        return
    if _GLOB_CHARS & set(spec):
        before = len(out.entries)
        matches = sorted(glob.glob(str(path), recursive=True))
        files = [Path(m) for m in matches if not Path(m).name.startswith(".")]
        for m in files:
            found = detect(m)
            if m.is_dir() and found.kind != "slide":
                continue  # a glob names files; DICOM folders are slides
            if found.kind is None:
                out.ignored.append(
                    Ignored(str(m), "not a slide or image (content and suffix not recognised)")
                )
            else:
                out.entries.append(Entry(m, given, found.format, name))
        if len(out.entries) == before:
            out.entries.append(
                Entry(path, given, "glob", error=f"{spec}: no slide or image matches this pattern")
            )
        return
    out.entries.append(Entry(path, given, "missing", name, error=f"{path}: no such file or folder"))


def expand_specs(specs: Iterable[str | Path]) -> Expansion:
    out = Expansion()
    for spec in specs:
        _spec(str(spec), None, out, None, False)
    seen: dict[Path, str] = {}
    unique = []
    for e in out.entries:
        key = e.path.resolve()
        if e.error is None and key in seen:
            out.ignored.append(Ignored(str(e.path), f"given twice (also from {seen[key]}); run once"))
            continue
        seen.setdefault(key, e.given)
        unique.append(e)
    out.entries = unique
    return out


# ---- planning ----------------------------------------------------------------------------------------------
def _stem(path: Path) -> str:
    suffix = suffix_of(path)
    return path.name[: len(path.name) - len(suffix)] if suffix and not path.is_dir() else path.name


def plan_inputs(specs: Sequence[str | Path], output: Path) -> Plan:
    """Expand the specs and give every input its own output folder under `output` (see runtime.outdir)."""
    output = Path(output)
    exp = expand_specs(specs)
    names = unique_names([(e.path, _stem(e.path), e.name) for e in exp.entries])
    items: list[PlannedInput] = []
    taken: set[str] = set()
    for i, (e, (name, how)) in enumerate(zip(exp.entries, names, strict=True)):
        digest: list[str] = []
        error = e.error

        def digest_of(path: Path = e.path, cache: list[str] = digest) -> str:
            if not cache:
                cache.append(content_digest(path))
            return cache[0]

        if error is None:
            try:
                chosen, why = choose_folder(output, name, digest_of, taken)
            except (InputError, OSError) as exc:
                chosen, why, error = name, None, str(exc)
            if why is not None:
                log.warning("%s: output folder %s instead of %s: %s", e.path, chosen, name, why)
                how = f"{how}; then its content digest, because {why}"
            name = chosen
        taken.add(name.casefold())
        items.append(
            PlannedInput(
                i, e.path, e.given, e.format, name, how, output / name, digest[0] if digest else None, error
            )
        )
    return Plan(output, items, exp.ignored)
