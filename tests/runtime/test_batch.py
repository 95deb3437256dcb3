"""Many inputs per run (issue 16, items 1, 2, 4, 5): folders of slides, globs and manifests recognised by
content; one output folder per input, owned and never shared; no input name escaping `-o`; one bad input
failing alone, recorded in run.json.

Real files throughout: synthetic Aperio slides read by OpenSlide, PNG/TIFF images, hostile files built here,
the real CMU-1-Small-Region.svs where present, and the colour-threshold deployment graph of test_e2e run by
ONNX Runtime.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from test_e2e import COMMON, colour_graph

from cellvit_trt.cli import main
from cellvit_trt.errors import InputError
from cellvit_trt.runtime.batch import Outcome, RunRecord, run_batch
from cellvit_trt.runtime.inputs import plan_inputs
from cellvit_trt.runtime.outdir import OWNER_FILE, safe_name
from cellvit_trt.runtime.sources import detect

REAL = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "real" / "CMU-1-Small-Region.svs"


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return colour_graph(tmp_path_factory.mktemp("model") / "colour.onnx")


def field(path: Path, seed: int, shape=(300, 420)) -> Path:
    """A real H&E-like PNG/TIFF field of view (synthetic tissue, nuclei to find)."""
    from cellvit_trt.synthetic.tile import generate_tile

    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), generate_tile(shape, seed=seed, glass_fraction=0.0).image[..., ::-1])
    return path


def slide(path: Path, seed: int) -> Path:
    """A small Aperio-style pyramidal TIFF (JPEG tiles): OpenSlide detects it as 'aperio'."""
    from cellvit_trt.synthetic import write_synthetic_slide

    path.parent.mkdir(parents=True, exist_ok=True)
    write_synthetic_slide(
        path,
        width=420,
        height=380,
        mpp=0.25,
        seed=seed,
        tile_size=256,
        downsamples=(1,),
        write_labels=False,
        glass_fraction=0.0,
    )
    return path


def run(model, out, *specs, extra=()):
    return main(
        ["run", *map(str, specs), "-m", str(model), "-o", str(out), "--mpp", "0.25", *COMMON, *extra]
        + ["--outputs", "cells", "summary"]
    )


def visible_files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if not p.name.startswith("."))


def run_json(out: Path) -> dict:
    return json.loads((out / "run.json").read_text())


def cells(folder: Path) -> list:
    return json.loads((folder / "cells.json").read_text())["cells"]


def png_header_only(path: Path, width: int, height: int) -> Path:
    """A valid PNG signature and IHDR declaring width x height, with a tiny IDAT: a decompression bomb."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\0" * 4096))
        + chunk(b"IEND", b"")
    )
    return path


# ---- item 1: a folder of slides is a batch; globs, manifests; formats by content ---------------------------
def test_folders_globs_and_manifests_make_one_batch_recognised_by_content(model, tmp_path):
    slides = tmp_path / "slides"
    slide(slides / "case1.svs", seed=1)
    slide(slides / "case2.svs", seed=2)
    shutil.copy(field(tmp_path / "tmp.png", seed=3), slides / "scan-without-suffix")  # a PNG, by content
    (slides / "notes.txt").write_text("not a slide")
    field(slides / ".hidden.png", seed=4)
    more = tmp_path / "more"
    slide(more / "x.svs", seed=5)
    slide(more / "y.svs", seed=6)
    field(tmp_path / "listed" / "f1.png", seed=7)
    manifest = tmp_path / "cases.csv"
    manifest.write_text("path,name\n# a comment line\nlisted/f1.png,patient-7\n")
    out = tmp_path / "out"
    assert run(model, out, slides, more / "*.svs", manifest) == 0
    doc = run_json(out)
    got = {Path(e["input"]).name: e for e in doc["inputs"]}
    assert set(got) == {"case1.svs", "case2.svs", "scan-without-suffix", "x.svs", "y.svs", "f1.png"}, got
    assert all(e["status"] == "ok" and e["ok"] and e["cells"] > 0 and not e["error"] for e in got.values())
    assert got["case1.svs"]["format"] == "aperio" and got["scan-without-suffix"]["format"] == "png"
    assert got["f1.png"]["output_name"] == "patient-7"
    for e in got.values():
        folder = Path(e["output"])
        assert folder.parent == out and len(cells(folder)) == e["cells"]
        summary = json.loads((folder / "summary.json").read_text())
        assert Path(summary["input"]).name == Path(e["input"]).name
    ignored = {Path(g["path"]).name: g["reason"] for g in doc["ignored"]}
    assert "notes.txt" in ignored and "case1.cells.npz" in ignored and ".hidden.png" not in got
    assert doc["status"] == "done" and doc["counts"] == {"ok": 6} and doc["failed"] == 0


def test_detection_is_by_content_and_covers_the_slide_readers(tmp_path):
    svs = slide(tmp_path / "s.svs", seed=1)
    renamed = tmp_path / "renamed.bin"
    shutil.copy(svs, renamed)
    assert detect(renamed).kind == "slide" and detect(renamed).format == "aperio"  # OpenSlide, by content
    png = field(tmp_path / "p.png", seed=2)
    shutil.copy(png, tmp_path / "fake.svs")
    assert detect(tmp_path / "fake.svs").format == "png"
    import tifffile

    tifffile.imwrite(tmp_path / "pyramid.data", np.zeros((512, 512, 3), np.uint8), tile=(256, 256))
    assert detect(tmp_path / "pyramid.data").kind in ("tiff", "slide")  # TIFF magic: tiffslide opens it
    (tmp_path / "empty.ndpi").write_bytes(b"")
    assert detect(tmp_path / "empty.ndpi") == detect(tmp_path / "empty.ndpi").__class__(
        "slide", "unrecognised", "suffix"
    )  # listed (and failing with its own error), never skipped silently
    if REAL.is_file():
        real_copy = tmp_path / "folder" / "CMU-1-Small-Region.dat"
        real_copy.parent.mkdir()
        os.symlink(REAL.resolve(), real_copy)
        plan = plan_inputs([real_copy.parent], tmp_path / "o")
        assert [(i.path.name, i.format) for i in plan.items] == [("CMU-1-Small-Region.dat", "aperio")]
    else:
        print(f"real slide {REAL} absent: its detection by content was not checked")


# ---- item 2: one folder per input, owned by content -------------------------------------------------------
def test_inputs_sharing_a_name_never_share_a_folder(model, tmp_path):
    a = field(tmp_path / "x" / "p.png", seed=11)
    field(tmp_path / "x" / "p.tif", seed=12)  # same stem, other content
    field(tmp_path / "y" / "p.png", seed=13)  # same name, other folder
    out = tmp_path / "out"
    assert run(model, out, tmp_path / "x", tmp_path / "y" / "p.png") == 0
    entries = run_json(out)["inputs"]
    folders = [Path(e["output"]) for e in entries]
    assert len(set(folders)) == 3 and all(f.parent == out for f in folders), folders
    assert all("shared" in e["output_name_from"] for e in entries), entries
    counts = [len(cells(f)) for f in folders]
    assert counts == [e["cells"] for e in entries] and len(set(counts)) == 3, counts
    for e in entries:  # each folder holds the cells of its own input
        assert json.loads((Path(e["output"]) / "summary.json").read_text())["input"] == e["input"]

    # a later run whose input has another content never writes into a folder another input owns
    out2 = tmp_path / "out2"
    assert run(model, out2, a) == 0
    owned = out2 / "p"
    before = {p.name: p.read_bytes() for p in owned.iterdir() if p.is_file()}
    other = field(tmp_path / "z" / "p.png", seed=14)
    assert run(model, out2, other) == 0
    moved = run_json(out2)["inputs"][0]
    assert Path(moved["output"]) != owned and "belongs to" in moved["output_name_from"], moved
    assert {p.name: p.read_bytes() for p in owned.iterdir() if p.is_file()} == before
    assert json.loads((owned / OWNER_FILE).read_text())["input"] == str(a.resolve())
    # the same content again finds its own folder
    assert run(model, out2, other) == 0 and run_json(out2)["inputs"][0]["output"] == moved["output"]
    # the job itself refuses a folder that belongs to another input
    from cellvit_trt.runtime.backends import open_backend
    from cellvit_trt.runtime.job import run_input
    from cellvit_trt.runtime.settings import RunSettings

    with open_backend(model, backend="onnxruntime", batch=2, threads=1) as be:
        with pytest.raises(InputError, match="belongs to"):
            run_input(other, RunSettings(mpp=0.25, outputs=["cells"]), be, out_dir=owned, progress=False)
    assert {p.name: p.read_bytes() for p in owned.iterdir() if p.is_file()} == before
    # a library caller that owns the folder whatever wrote it (the demo regenerates its slide) may replace it
    with open_backend(model, backend="onnxruntime", batch=2, threads=1) as be:
        settings = RunSettings(mpp=0.25, outputs=["cells"])
        run_input(other, settings, be, out_dir=owned, progress=False, replace_other=True)
    assert json.loads((owned / OWNER_FILE).read_text())["input"] == str(other.resolve())
    assert visible_files(owned) == ["cell_detection.json", "cells.json"]
    shutil.rmtree(owned)
    assert run(model, out2, a) == 0 and Path(run_json(out2)["inputs"][0]["output"]) == owned
    # ownership is by content, not path: the first image moved to another folder is still the owner
    shutil.copy(a, tmp_path / "w" / "p.png") if (tmp_path / "w").mkdir() is None else None
    assert run(model, out2, tmp_path / "w" / "p.png") == 0
    assert Path(run_json(out2)["inputs"][0]["output"]) == owned


def test_a_folder_with_foreign_files_is_not_taken(model, tmp_path):
    img = field(tmp_path / "in" / "scan.png", seed=21)
    out = tmp_path / "out"
    (out / "scan").mkdir(parents=True)
    (out / "scan" / "my-notes.docx").write_bytes(b"the pathologist's notes")
    assert run(model, out, img) == 0
    entry = run_json(out)["inputs"][0]
    assert (
        Path(entry["output"]).name.startswith("scan-") and len(cells(Path(entry["output"]))) == entry["cells"]
    )
    assert sorted(p.name for p in (out / "scan").iterdir()) == ["my-notes.docx"]


# ---- item 4: no input name escapes -o ---------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("..", "input"),
        (".", "input"),
        ("../../etc/passwd", "_.._etc_passwd"),
        ("/abs/x", "_abs_x"),
        ("a\\b", "a_b"),
        (".hidden", "hidden"),
        ("CON", "_CON"),
        ("nul.txt", "_nul.txt"),
        ("run.json", "_run.json"),
        ("x\n\0y", "x__y"),
        ("Patient Müller", "Patient_Müller"),
    ],
)
def test_safe_name(text, expected):
    assert safe_name(text) == expected
    assert "/" not in safe_name(text) and not safe_name(text).startswith(".")


def test_input_names_cannot_escape_the_output_folder(model, tmp_path):
    inputs = tmp_path / "in"
    named = [
        field(inputs / name, seed=30 + i, shape=(200, 240)) for i, name in enumerate(["...png", "..tif"])
    ]
    field(inputs / "c.png", seed=33, shape=(200, 240))
    manifest = tmp_path / "m.csv"
    manifest.write_text("path,name\nin/c.png,../../escaped\n")
    out = tmp_path / "base" / "out"
    out.mkdir(parents=True)
    before = set(tmp_path.rglob("*"))
    assert run(model, out, *named, manifest) == 0  # hidden files run when named explicitly
    created = set(tmp_path.rglob("*")) - before
    outside = [p for p in created if out not in p.parents]
    assert outside == [], outside
    names = sorted(Path(e["output"]).name for e in run_json(out)["inputs"])
    assert all(not n.startswith(".") and "/" not in n for n in names) and len(set(names)) == 3, names
    assert "_.._escaped" in names, names


# ---- item 5: one bad input fails alone, with a one-line message in run.json --------------------------------
def test_a_hostile_input_fails_alone_and_the_exit_code_says_so(model, tmp_path, capsys):
    folder = tmp_path / "in"
    good = field(folder / "good.png", seed=41)
    bomb = png_header_only(folder / "bomb.png", 100_000, 100_000)
    (folder / "zero.svs").write_bytes(b"")
    out = tmp_path / "out"
    assert run(model, out, folder, tmp_path / "missing.svs") == 1
    err = capsys.readouterr().err
    assert "3 of 4 inputs failed" in err, err
    doc = run_json(out)
    by_name = {Path(e["input"]).name: e for e in doc["inputs"]}
    assert by_name["good.png"]["status"] == "ok" and len(cells(out / "good")) == by_name["good.png"]["cells"]
    for name in ("bomb.png", "zero.svs", "missing.svs"):
        e = by_name[name]
        assert (
            e["status"] == "failed" and e["ok"] is False and name in e["error"] and "\n" not in e["error"]
        ), e
    assert str(bomb) in by_name["bomb.png"]["error"] and doc["failed"] == 3
    assert not (out / "bomb").exists() and not (out / "zero").exists()  # nothing left for a failed input
    assert good.exists()


def test_batch_captures_any_exception_and_stops_on_interrupt(tmp_path):
    for name in ("a.png", "b.png", "c.png"):
        field(tmp_path / "in" / name, seed=len(name), shape=(64, 64))
    plan = plan_inputs([tmp_path / "in"], tmp_path / "out")

    def execute(item):
        if item.path.name == "a.png":
            raise cv2.error("OpenCV(4.7.0) loadsave.cpp:79: error: (-215:Assertion failed)\nsecond line")
        return Outcome("ok", cells=1, tiles=1, tiles_resumed=0, seconds=0.0)

    record = run_batch(plan, execute, RunRecord(plan))
    assert [o.status for o in record.outcomes.values()] == ["failed", "ok", "ok"]
    err = record.outcomes[0].error
    assert err.startswith(str(plan.items[0].path)) and "error: (-215" in err and "\n" not in err, err

    def interrupted(item):
        if item.path.name == "b.png":
            raise KeyboardInterrupt
        return Outcome("ok", cells=1, tiles=1, tiles_resumed=0, seconds=0.0)

    with pytest.raises(KeyboardInterrupt):
        run_batch(plan, interrupted, RunRecord(plan))
    doc = run_json(tmp_path / "out")
    assert doc["status"] == "interrupted"
    assert [e["status"] for e in doc["inputs"]] == ["ok", "interrupted", "pending"]
