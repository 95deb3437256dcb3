"""End to end on CPU: `cellvit-trt run` with ONNX Runtime on synthetic pyramidal TIFF slides written here.

The model is a real deployment graph (ONNX, the I/O table exactly, run by ONNX Runtime) that segments nuclei
by
colour: it needs no training, finds the synthetic nuclei well enough to check coordinates against ground
truth,
and is fast, so the tests exercise the runtime (tiling, pipeline, merge, writers, resume, memory), not a
model.
The checkpoint route (export on the fly, PyTorch → ONNX) is covered with the tiny model at the end.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from cellvit_trt.cli import main

TILE = 256  # tiles 256, overlap 64 total: stride 192
STRIDE = 192
ROOT = Path(__file__).resolve().parents[2]


# ---- fixtures: a colour-segmentation deployment graph and two synthetic slides
# ---------------------------------
def _gauss(sigma):
    r = int(3 * sigma)
    x = np.arange(-r, r + 1, dtype=np.float32)
    g = np.exp(-(x**2) / (2 * sigma**2))
    g /= g.sum()
    return g, -x / sigma**2 * g, r


def colour_graph(path: Path, tile: int = TILE, tissue: int = 19) -> Path:
    """fg = blurred red-channel darkness > 0.27; hv = -gain * gradient of a wider blur (points away from the
    nucleus centre, like HoVer maps); type 1/2 by darkness; tissue logits from mean darkness; tokens =
    16x16 mean colour (E = 3)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    g1, _, r1 = _gauss(1.5)
    g2, d2, r2 = _gauss(4.0)
    gain = 40.0
    hv_w = np.stack([np.outer(g2, d2), np.outer(d2, g2)])[:, None] * gain  # d/dx, d/dy of the blur
    inits = {
        "w_red": np.array([[[[-1 / 255.0]], [[0.0]], [[0.0]]]], np.float32),
        "b_one": np.ones(1, np.float32),
        "w_blur": np.outer(g1, g1)[None, None].astype(np.float32),
        "w_hv": hv_w.astype(np.float32),
        "thr": np.array(0.27, np.float32),
        "thr2": np.array(0.39, np.float32),
        "lo": np.array(-1.0, np.float32),
        "hi": np.array(1.0, np.float32),
        "ax1": np.array([1], np.int64),
        "tissue_w": np.linspace(-1, 1, tissue, dtype=np.float32)[None],
        "inv255": np.array(1 / 255, np.float32),
    }
    node = helper.make_node
    nodes = [
        node("Cast", ["image"], ["f"], to=TensorProto.FLOAT),
        node("Transpose", ["f"], ["nchw"], perm=[0, 3, 1, 2]),
        node("Conv", ["nchw", "w_red", "b_one"], ["dark"]),
        node("Conv", ["dark", "w_blur"], ["blur"], pads=[r1] * 4),
        node("Greater", ["blur", "thr"], ["fgb"]),
        node("Cast", ["fgb"], ["fg4"], to=TensorProto.UINT8),
        node("Squeeze", ["fg4", "ax1"], ["fg"]),
        node("Conv", ["dark", "w_hv"], ["hv32"], pads=[r2] * 4),
        node("Clip", ["hv32", "lo", "hi"], ["hvc"]),
        node("Cast", ["hvc"], ["hv"], to=TensorProto.FLOAT16),
        node("Greater", ["blur", "thr2"], ["darker"]),
        node("Cast", ["darker"], ["darker8"], to=TensorProto.UINT8),
        node("Add", ["fg4", "darker8"], ["t4"]),
        node("Squeeze", ["t4", "ax1"], ["type_map"]),
        node("ReduceMean", ["dark"], ["m2"], axes=[2, 3], keepdims=0),
        node("MatMul", ["m2", "tissue_w"], ["tissue_logits"]),
        node("AveragePool", ["nchw"], ["pool"], kernel_shape=[16, 16], strides=[16, 16]),
        node("Mul", ["pool", "inv255"], ["pool01"]),
        node("Cast", ["pool01"], ["tokens"], to=TensorProto.FLOAT16),
    ]
    vi = helper.make_tensor_value_info
    graph = helper.make_graph(
        nodes,
        "colour",
        [vi("image", TensorProto.UINT8, ["N", tile, tile, 3])],
        [
            vi("fg", TensorProto.UINT8, ["N", tile, tile]),
            vi("hv", TensorProto.FLOAT16, ["N", 2, tile, tile]),
            vi("type_map", TensorProto.UINT8, ["N", tile, tile]),
            vi("tissue_logits", TensorProto.FLOAT, ["N", tissue]),
            vi("tokens", TensorProto.FLOAT16, ["N", 3, tile // 16, tile // 16]),
        ],
        initializer=[numpy_helper.from_array(v, k) for k, v in inits.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    meta = {
        "model": "colour-threshold",
        "tile_size": tile,
        "overlap": 64,
        "target_mpp": 0.25,
        "magnification": 40,
        "class_names": ["Background", "Neoplastic", "Inflammatory", "Connective", "Dead", "Epithelial"],
        "tissue_names": [f"tissue{i}" for i in range(tissue)],
        "precision": "fp32",
    }
    entry = model.metadata_props.add()
    entry.key, entry.value = "cellvit_trt", json.dumps(meta)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def write_slide(path: Path, height: int, width: int, seed: int):
    """A pyramidal Aperio-style TIFF (JPEG tiles, levels 1 and 2) from helper D's synthetic slide writer;
    returns its ground-truth cells (level-0 px)."""
    from cellvit_trt.synthetic import load_slide_cells, write_synthetic_slide

    write_synthetic_slide(
        path,
        width=width,
        height=height,
        mpp=0.25,
        seed=seed,
        tile_size=256,
        downsamples=(1, 2),
        compression="jpeg",
        glass_fraction=0.15,
        write_labels=False,
    )
    return load_slide_cells(path)[0]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    d = tmp_path_factory.mktemp("e2e")
    model = colour_graph(d / "colour.onnx")
    gt_a = write_slide(d / "slide_a.svs", 3 * STRIDE, 4 * STRIDE, seed=7)  # 4 x 3 tiles
    write_slide(d / "slide_b.svs", 6 * STRIDE, 8 * STRIDE, seed=7)  # 4x the area
    return {
        "dir": d,
        "model": model,
        "slide_a": d / "slide_a.svs",
        "slide_b": d / "slide_b.svs",
        "gt_a": gt_a,
    }


COMMON = ["--backend", "onnxruntime", "-b", "4", "-j", "2", "--threads", "1", "-q"]


def cli_subprocess(args, env_extra=None, timeout=120):
    env = {
        **os.environ,
        "NUMBA_CACHE_DIR": os.environ.get("NUMBA_CACHE_DIR", str(ROOT / ".numba_cache")),
        **(env_extra or {}),
    }
    code = (
        "import resource, sys\nfrom cellvit_trt.cli import main\nrc = main(sys.argv[1:])\n"
        "print('MAXRSS_KB', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, flush=True)\nsys.exit(rc)"
    )
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        cwd=ROOT,
    )


def cells_of(out: Path) -> list:
    return json.loads((out / "cells.json").read_text())["cells"]


def cell_set(out: Path) -> list:
    """The cells without their ids, in a canonical order (the merge may emit a batch in another order)."""
    cells = [{k: v for k, v in c.items() if k != "cell_id"} for c in cells_of(out)]
    return sorted(cells, key=lambda c: json.dumps(c, sort_keys=True))


# ---- tests
# ------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def full_run(world):
    out = world["dir"] / "full"
    cfg = world["dir"] / "run.yaml"
    cfg.write_text("run:\n  batch: 2\n  workers: 2\n  checkpoint_tiles: 3\n  tissue_threshold: 0.05\n")
    rc = main(
        [
            "run",
            str(world["slide_a"]),
            "-m",
            str(world["model"]),
            "-o",
            str(out),
            *COMMON,
            "--config",
            str(cfg),
            "--outputs",
            "geojson",
            "cells",
            "table",
            "embeddings",
            "tissue",
            "summary",
            "overlay",
        ]
    )
    assert rc == 0
    return out / "slide_a"


def test_outputs_are_complete_and_consistent(full_run):
    import geopandas

    out = full_run
    summary = json.loads((out / "summary.json").read_text())
    n = summary["cells_total"]
    assert n > 100 and summary["cells"] == n
    assert summary["tiles_planned"] == summary["tiles_processed"] >= 8 and summary["tiles_resumed"] == 0
    # effective configuration: YAML values, overridden by flags (-b 4 beats batch: 2)
    s = summary["settings"]
    assert (s["batch"], s["workers"], s["checkpoint_tiles"], s["tissue_threshold"]) == (4, 2, 3, 0.05)
    assert summary["backend"]["backend"] == "onnxruntime"
    t = summary["timing"]
    assert (
        t["tiles"] == summary["tiles_processed"]
        and t["tiles_per_s"] > 0
        and 0 <= t["backend_wait_fraction"] <= 1
    )
    assert all(t["queue_max"][q] <= t["queue_bound"][q] for q in t["queue_max"])
    gdf = geopandas.read_file(out / "cells.geojson")
    # every polygon valid: the writer repairs self-touching OpenCV rings (cells.json keeps them raw)
    assert len(gdf) == n and set(gdf.geom_type) == {"Polygon"} and gdf.is_valid.all()
    assert len(cells_of(out)) == n
    assert len(json.loads((out / "cell_detection.json").read_text())["cells"]) == n
    import pandas as pd

    assert len(pd.read_csv(out / "cells.csv")) == n and len(pd.read_parquet(out / "cells.parquet")) == n
    emb = np.load(out / "embeddings.npy")
    assert emb.shape == (n, 3) and np.isfinite(emb.astype(np.float32)).all()
    assert (out / "overlay.png").stat().st_size > 0 and (out / "tissue_tiles.csv").is_file()
    assert not (out / ".resume").exists(), "the resume journal is removed after a successful run"
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]


def test_merge_has_no_cross_tile_duplicates_and_matches_ground_truth(world, full_run):
    from scipy.spatial import cKDTree

    cells = cells_of(full_run)
    xy = np.array([c["centroid"] for c in cells], float)
    tiles = [tuple(c["patch_coordinates"]) for c in cells]
    cross = [(i, j) for i, j in cKDTree(xy).query_pairs(12) if tiles[i] != tiles[j]]
    assert cross == [], f"cells reported twice across tiles: {[(xy[i], xy[j]) for i, j in cross][:5]}"
    assert len(set(tiles)) > 6, "cells come from many tiles, border ones included"
    gt = np.asarray(world["gt_a"].centroid, float)  # (x, y) level-0 px
    d, _ = cKDTree(gt).query(xy)
    tp = int((d < 12).sum())
    f1 = 2 * tp / (len(xy) + len(gt))
    assert f1 > 0.75, f"detection F1 {f1:.2f} vs ground truth: coordinates or merge are off"


def test_resume_after_kill_gives_identical_cells(world, full_run):
    out = world["dir"] / "resumed"
    args = [
        "run",
        str(world["slide_a"]),
        "-m",
        str(world["model"]),
        "-o",
        str(out),
        *COMMON,
        "--checkpoint-tiles",
        "2",
        "--tissue-threshold",
        "0.05",
        "--outputs",
        "cells",
        "summary",
    ]
    killed = cli_subprocess(args, {"CELLVIT_TRT_FAULT_KILL_AFTER_TILES": "4"})
    assert killed.returncode == -9, killed.stderr[-2000:]
    assert not (out / "slide_a" / "cells.json").exists(), "no output from a killed run"
    manifest = json.loads((out / "slide_a" / ".resume" / "manifest.json").read_text())
    assert sum(c["tiles"] for c in manifest["chunks"]) == 4
    resumed = cli_subprocess([*args, "--resume"])
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    summary = json.loads((out / "slide_a" / "summary.json").read_text())
    assert summary["tiles_resumed"] == 4 and summary["tiles_processed"] == summary["tiles_planned"] - 4
    assert cell_set(out / "slide_a") == cell_set(full_run)
    # --resume on a finished input does nothing (a folder run can be restarted without redoing slides)
    mtime = (out / "slide_a" / "cells.json").stat().st_mtime_ns
    again = cli_subprocess([*args, "--resume"])
    assert again.returncode == 0 and "already complete" in again.stdout, again.stdout + again.stderr[-2000:]
    assert (out / "slide_a" / "cells.json").stat().st_mtime_ns == mtime
    # a resume with other settings is refused with the reason
    assert cli_subprocess(args, {"CELLVIT_TRT_FAULT_KILL_AFTER_TILES": "2"}).returncode == -9
    other = [("0.2" if a == "0.05" else a) for a in args]
    refused = cli_subprocess([*other, "--resume"])
    assert refused.returncode == 1 and "tissue_threshold: was 0.05, now 0.2" in refused.stderr, refused.stderr


def test_memory_is_bounded_by_the_pipeline_not_the_slide(world):
    peaks = {}
    for name in ("slide_a", "slide_b"):
        r = cli_subprocess(
            [
                "run",
                str(world[name]),
                "-m",
                str(world["model"]),
                "-o",
                str(world["dir"] / "mem"),
                *COMMON,
                "--outputs",
                "geojson",
                "cells",
                "table",
                "summary",
            ]
        )
        assert r.returncode == 0, r.stderr[-2000:]
        peaks[name] = int(r.stdout.split("MAXRSS_KB")[1].split()[0])
    summary_b = json.loads((world["dir"] / "mem" / "slide_b" / "summary.json").read_text())
    assert summary_b["tiles_processed"] == summary_b["tiles_planned"] >= 32
    print(f"peak RSS (KiB): {peaks}")
    assert peaks["slide_b"] < 1.2 * peaks["slide_a"], peaks


def test_corrupt_and_truncated_slides_fail_cleanly(world, capsys):
    import tifffile

    data = world["slide_a"].read_bytes()
    with tifffile.TiffFile(world["slide_a"]) as tf:
        offsets, counts = tf.pages[0].dataoffsets, tf.pages[0].databytecounts
    corrupt = world["dir"] / "corrupt.svs"
    # garble the JPEG data of one base-level TIFF tile; the file structure stays intact
    at = offsets[5] + counts[5] // 3
    corrupt.write_bytes(
        data[:at] + bytes(np.random.default_rng(0).integers(0, 256, 2000, np.uint8)) + data[at + 2000 :]
    )
    out = world["dir"] / "bad"
    rc = main(["run", str(corrupt), "-m", str(world["model"]), "-o", str(out), *COMMON, "--no-tissue"])
    err = capsys.readouterr().err
    assert rc == 1
    assert "corrupt.svs" in err and "tile (row" in err, err
    left = [p.name for p in (out / "corrupt").iterdir()] if (out / "corrupt").exists() else []
    assert [n for n in left if n not in (".resume", ".cellvit-trt-owner.json")] == [], left  # no outputs
    truncated = world["dir"] / "truncated.svs"
    truncated.write_bytes(data[: len(data) // 2])
    rc = main(["run", str(truncated), "-m", str(world["model"]), "-o", str(out), *COMMON])
    err = capsys.readouterr().err
    assert rc == 1 and "truncated.svs" in err, err
    assert not (out / "truncated" / "cells.geojson").exists()


def test_usage_errors_have_exit_code_2(world, capsys):
    assert main(["run", "-m", str(world["model"])]) == 2
    with pytest.raises(SystemExit) as e:
        main(["run", str(world["slide_a"]), "--backend", "nonsense"])
    assert e.value.code == 2
    assert main(["run", str(world["slide_a"]), "-m", str(world["model"]), "-b", "0"]) == 1
    assert "batch" in capsys.readouterr().err


def test_default_demo_model_is_exported_on_the_fly_and_finds_the_nuclei(world, tmp_path):
    """No -m: the shipped tiny demo checkpoint, exported once to ONNX in the cache, run by ONNX Runtime on the
    synthetic slide; its cells are compared with the slide's ground truth."""
    pytest.importorskip("torch")
    from scipy.spatial import cKDTree

    args = [
        "run",
        str(world["slide_a"]),
        "--tile-size",
        str(TILE),
        "-o",
        str(tmp_path / "o"),
        "--cache-dir",
        str(tmp_path / "cache"),
        *COMMON,
        "--outputs",
        "cells",
        "summary",
    ]
    assert main(args) == 0
    summary = json.loads((tmp_path / "o" / "slide_a" / "summary.json").read_text())
    assert summary["backend"]["backend"] == "onnxruntime" and summary["grid"]["tile_size"] == TILE
    assert summary["settings"]["model"] == "demo"
    assert list((tmp_path / "cache").glob(f"cellvit-tiny-synthetic-demo-*-{TILE}-fp32.onnx"))
    xy = np.array([c["centroid"] for c in cells_of(tmp_path / "o" / "slide_a")], float)
    gt = np.asarray(world["gt_a"].centroid, float)
    tp = int((cKDTree(gt).query(xy)[0] < 12).sum())
    f1 = 2 * tp / (len(xy) + len(gt))
    assert f1 > 0.85, (
        f"demo model F1 {f1:.2f} against the synthetic ground truth ({len(xy)} vs {len(gt)} cells)"
    )


def test_sigterm_stops_with_130_and_keeps_finished_tiles(world):
    import signal
    import time

    out = world["dir"] / "term" / "slide_b"
    env = {**os.environ, "NUMBA_CACHE_DIR": os.environ.get("NUMBA_CACHE_DIR", str(ROOT / ".numba_cache"))}
    args = [
        "run",
        str(world["slide_b"]),
        "-m",
        str(world["model"]),
        "-o",
        str(world["dir"] / "term"),
        *COMMON,
        "--checkpoint-tiles",
        "1",
        "--outputs",
        "cells",
        "summary",
    ]
    proc = subprocess.Popen(
        [sys.executable, "-m", "cellvit_trt.cli", *args],
        env=env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    manifest = out / ".resume" / "manifest.json"
    deadline = time.time() + 90
    while not manifest.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err[-2000:]
    assert "interrupted" in err
    done = json.loads(manifest.read_text())
    assert 1 <= sum(c["tiles"] for c in done["chunks"]) < 40
    assert not (out / "cells.json").exists() and not [p for p in out.iterdir() if p.name.endswith(".tmp")]


def test_folder_of_images_continues_past_a_bad_one(world, tmp_path, capsys):
    import cv2

    from cellvit_trt.synthetic.tile import generate_tile

    folder = tmp_path / "fields"
    folder.mkdir()
    for seed in (1, 2):
        cv2.imwrite(
            str(folder / f"field{seed}.png"),
            generate_tile((300, 420), seed=seed, glass_fraction=0.0).image[..., ::-1],
        )
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    rc = main(
        [
            "run",
            str(folder),
            "-m",
            str(world["model"]),
            "--mpp",
            "0.25",
            "-o",
            str(tmp_path / "o"),
            *COMMON,
            "--outputs",
            "cells",
            "summary",
        ]
    )
    err = capsys.readouterr().err
    assert rc == 1 and "broken.png" in err and "1 of 3 inputs failed" in err, err
    index = json.loads((tmp_path / "o" / "run.json").read_text())
    assert index["failed"] == 1 and [e["ok"] for e in index["inputs"]] == [False, True, True]
    for seed in (1, 2):
        s = json.loads((tmp_path / "o" / f"field{seed}" / "summary.json").read_text())
        assert s["cells_total"] > 0 and s["grid"]["tile_size"] == TILE


def test_scanner_push_api_gives_the_cells_of_a_file_run(world, tmp_path):
    """Scanner mode (sources.PushSource + job.run_push): strips pushed while cells stream back, and the cells
    equal those of `cellvit-trt run` on the same pixels saved as an image."""
    import threading
    import time

    import cv2

    from cellvit_trt.runtime.backends import open_backend
    from cellvit_trt.runtime.cells import CellBatch
    from cellvit_trt.runtime.job import run_push
    from cellvit_trt.runtime.sources import PushSource
    from cellvit_trt.synthetic.tile import generate_tile

    image = generate_tile((3 * STRIDE, 4 * STRIDE), seed=21, glass_fraction=0.0).image
    cv2.imwrite(str(tmp_path / "scan.png"), image[..., ::-1])
    assert (
        main(
            [
                "run",
                str(tmp_path / "scan.png"),
                "-m",
                str(world["model"]),
                "--mpp",
                "0.25",
                "--no-tissue",
                "-o",
                str(tmp_path / "o"),
                *COMMON,
                "--outputs",
                "cells",
            ]
        )
        == 0
    )
    expected = sorted(tuple(c["centroid"]) for c in cells_of(tmp_path / "o" / "scan"))

    src = PushSource(*image.shape[:2], mpp=0.25, tile_size=TILE, overlap=32, maxsize=4, timeout=60)
    received: list[CellBatch] = []
    progress = {"rows": 0, "rows_at_first_cells": None}

    def scanner():
        for y in range(0, image.shape[0], 48):
            src.submit(image[y : y + 48], y, 0)
            progress["rows"] = y + 48
            time.sleep(0.2)  # a scanner's pace: the slide is not there all at once
        src.finish()

    def reader():
        for batch in src.results(timeout=60):
            if progress["rows_at_first_cells"] is None and len(batch):
                progress["rows_at_first_cells"] = progress["rows"]
            received.append(batch)

    threads = [threading.Thread(target=scanner), threading.Thread(target=reader)]
    for t in threads:
        t.start()
    with open_backend(world["model"], backend="onnxruntime", batch=4, threads=1) as be:
        stats = run_push(src, be, batch=4, workers=2)
    for t in threads:
        t.join(timeout=60)
    cells = CellBatch.concat(received)
    assert stats.tiles == 12 and len(cells) == len(expected) > 50
    assert sorted(map(tuple, np.rint(cells.centroid).astype(int).tolist())) == expected
    assert np.array_equal(np.sort(cells.id), np.arange(len(cells)))
    assert progress["rows_at_first_cells"] < image.shape[0], "cells reached the scanner before the scan ended"
