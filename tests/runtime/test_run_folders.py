"""A run owns its output folder (issue 16, items 3 and 12): a new run replaces the whole set or leaves the
previous one complete; what a killed run leaves behind is cleaned by the next run of that folder; `--resume`
commits by time as well as by tile count.

Real CLI runs (in process, and in a subprocess SIGKILLed by the journal's fault injection) on PNG fields of
synthetic H&E, with the colour-threshold deployment graph of test_e2e on ONNX Runtime.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from test_batch import field
from test_e2e import COMMON, cli_subprocess, colour_graph

from cellvit_trt.cli import main


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return colour_graph(tmp_path_factory.mktemp("model") / "colour.onnx")


def args(model, image, out, *outputs, extra=()):
    return [
        "run",
        str(image),
        "-m",
        str(model),
        "-o",
        str(out),
        "--mpp",
        "0.25",
        *COMMON,
        *extra,
        "--outputs",
        *outputs,
    ]


def visible(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")}


def done(folder: Path) -> dict:
    return json.loads((folder / ".done.json").read_text())


def leftovers(out: Path) -> list[str]:
    return sorted(
        p.name for p in out.iterdir() if ".staging-" in p.name or ".old-" in p.name or p.suffix == ".tmp"
    )


def test_a_new_run_replaces_the_whole_set(model, tmp_path):
    image = field(tmp_path / "scan.png", seed=3)
    out = tmp_path / "out"
    assert main(args(model, image, out, "cells", "table", "overlay", "tissue", "summary")) == 0
    first = visible(out / "scan")
    assert {"cells.csv", "overlay.png", "tissue_tiles.csv", "cells.json"} <= set(first)
    assert main(args(model, image, out, "geojson", "summary")) == 0
    assert set(visible(out / "scan")) == {"cells.geojson", "summary.json"}  # no stale csv/overlay/json beside
    assert done(out / "scan")["outputs"] == ["geojson", "summary"] and leftovers(out) == []


def test_a_killed_run_leaves_the_previous_set_complete_and_the_next_run_cleans_up(model, tmp_path):
    image = field(tmp_path / "scan.png", seed=4)  # 2 x 3 tiles of 256
    out = tmp_path / "out"
    assert main(args(model, image, out, "cells", "table", "summary")) == 0
    first, first_done = visible(out / "scan"), done(out / "scan")
    killed = cli_subprocess(
        args(model, image, out, "geojson", "summary", extra=["--checkpoint-tiles", "1"]),
        {"CELLVIT_TRT_FAULT_KILL_AFTER_TILES": "2"},
    )
    assert killed.returncode == -9, killed.stderr[-2000:]
    assert visible(out / "scan") == first and done(out / "scan") == first_done  # never a mixed set
    assert leftovers(out), "the kill left its staging folder (the next run removes it)"
    assert main(args(model, image, out, "geojson", "summary", extra=["--resume"])) == 0
    assert set(visible(out / "scan")) == {"cells.geojson", "summary.json"} and leftovers(out) == []
    summary = json.loads((out / "scan" / "summary.json").read_text())
    assert summary["tiles_resumed"] == 2 and summary["cells"] == first_done["cells"]
    assert not (out / "scan" / ".resume").exists()


def test_resume_helps_a_slide_under_32_tiles_and_orphaned_temp_files_are_removed(model, tmp_path):
    image = field(tmp_path / "small.png", seed=5)  # 6 tiles, fewer than the default --checkpoint-tiles 32
    out = tmp_path / "out"
    base = args(model, image, out, "cells", "summary", extra=["--checkpoint-seconds", "0"])
    killed = cli_subprocess(base, {"CELLVIT_TRT_FAULT_KILL_AFTER_TILES": "2"})
    assert killed.returncode == -9, killed.stderr[-2000:]
    # what kill -9 in the middle of atomic writes leaves: hidden files named as this package names its temps
    orphans = [
        out / "small" / ".resume" / ".chunk-000002.npz.k2j4h5g6.tmp",
        out / "small" / ".cells.json.a1b2c3d4.tmp",
        out / ".run.json.zz9_x8y7.tmp",
    ]
    for p in orphans:
        p.write_bytes(b"partial")
    old = os.stat(orphans[-1]).st_mtime - 3600
    os.utime(orphans[-1], (old, old))  # run.json's temp: removed only when old (another run may be writing)
    keep = [out / ".run.json.recent12.tmp", out / "small.notes.tmp"]
    for p in keep:
        p.write_bytes(b"not an orphan: too recent, or not the package's name pattern")
    assert main([*base, "--resume"]) == 0
    summary = json.loads((out / "small" / "summary.json").read_text())
    assert summary["tiles_resumed"] == 2 and summary["tiles_processed"] == summary["tiles_planned"] - 2
    assert [p for p in orphans if p.exists()] == [] and all(p.exists() for p in keep)
    assert leftovers(out) == [p.name for p in keep if p.suffix == ".tmp"]


def test_a_slide_replaced_with_the_same_size_and_mtime_is_not_skipped_by_resume(model, tmp_path, capsys):
    from cellvit_trt.synthetic import write_synthetic_slide

    def write(path, seed):
        write_synthetic_slide(
            path, 420, 380, seed=seed, tile_size=256, downsamples=(1,), compression="none", write_labels=False
        )
        return path.read_bytes()

    first, second = write(tmp_path / "a.svs", 1), write(tmp_path / "b.svs", 2)
    assert len(first) == len(second) and first != second
    slide = tmp_path / "slide.svs"
    slide.write_bytes(first)
    out = tmp_path / "out"
    base = ["run", str(slide), "-m", str(model), "-o", str(out), *COMMON, "--no-tissue", "--outputs", "cells"]
    assert main(base) == 0
    cells_first = json.loads((out / "slide" / "cells.json").read_text())["cells"]
    st = slide.stat()
    slide.write_bytes(second)  # another slide under the same name, same size, same mtime
    os.utime(slide, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert (slide.stat().st_size, slide.stat().st_mtime_ns) == (st.st_size, st.st_mtime_ns)
    capsys.readouterr()
    assert main([*base, "--resume"]) == 0
    assert "already complete" not in capsys.readouterr().out
    entry = json.loads((out / "run.json").read_text())["inputs"][0]
    assert entry["status"] == "ok", entry  # processed, not "already complete"
    cells_second = json.loads((Path(entry["output"]) / "cells.json").read_text())["cells"]
    assert cells_second != cells_first
    # the first slide's results are kept as they were, in the folder it owns
    assert json.loads((out / "slide" / "cells.json").read_text())["cells"] == cells_first


def test_content_digest_sees_a_changed_tile_and_the_header(tmp_path):
    import numpy as np
    import tifffile

    from cellvit_trt.runtime.identity import content_digest
    from cellvit_trt.runtime.job import fingerprint

    rng = np.random.default_rng(0)
    path = tmp_path / "big.tif"  # > 4 MiB: sampled, not hashed whole
    tifffile.imwrite(path, rng.integers(0, 255, (1536, 1536, 3), np.uint8), tile=(256, 256))
    with tifffile.TiffFile(path) as tf:
        offset = int(tf.pages[0].dataoffsets[0])
    ref = content_digest(path)
    data = bytearray(path.read_bytes())
    data[offset + 1000] ^= 0xFF  # one byte of the first tile
    path.write_bytes(bytes(data))
    assert content_digest(path) != ref
    data[offset + 1000] ^= 0xFF
    data[20] ^= 0xFF  # the header
    path.write_bytes(bytes(data))
    changed = content_digest(path)
    assert changed != ref
    be = type("B", (), {"kind": "onnxruntime"})()
    from cellvit_trt.runtime.settings import RunSettings

    assert fingerprint(path, be, RunSettings(), 256)["input_digest"] == changed
