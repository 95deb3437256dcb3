"""`cellvit-trt run` settings: YAML `run:` section + flags, validation messages, a light `--help`."""

from __future__ import annotations

import argparse
import subprocess
import sys

import pytest

from cellvit_trt.cli import main
from cellvit_trt.config import resolve
from cellvit_trt.errors import ConfigError
from cellvit_trt.runtime import cli as run_cli
from cellvit_trt.runtime.settings import RunSettings


def parse(argv):
    p = argparse.ArgumentParser()
    run_cli.add_arguments(p)
    return p.parse_args(argv)


def test_yaml_section_then_flags(tmp_path):
    cfg = tmp_path / "run.yaml"
    cfg.write_text(
        "run:\n  batch: 2\n  outputs: [geojson, summary]\n  tissue: false\n  providers: [cuda, cpu]\n"
        "export:\n  precision: int8\n"
    )
    s = resolve(
        RunSettings, parse(["slide.svs", "--config", str(cfg), "-b", "16", "--readers", "3"]), section="run"
    )
    assert (s.batch, s.readers, s.tissue, s.outputs, s.providers) == (
        16,
        3,
        False,
        ["geojson", "summary"],
        ["cuda", "cpu"],
    )
    assert s.input_specs() == ["slide.svs"] and s.model == "demo" and s.backend == "auto"
    assert s.reader_threads("onnxruntime") == 3


@pytest.mark.parametrize(
    ("yaml", "message"),
    [
        ("run:\n  batchsize: 4\n", "unknown key(s) ['batchsize']"),
        ("run:\n  tissue_threshold: 2\n", "tissue_threshold: got 2.0, expected 0..1"),
        ("run:\n  outputs: [geojson, pdf]\n", "outputs: got ['geojson', 'pdf']"),
        ("run:\n  backend: cuda\n", "backend: expected one of 'auto', 'tensorrt'"),
        ("run:\n  tile_size: 100\n", "tile_size: got 100, expected a positive multiple of 16"),
    ],
)
def test_bad_settings_name_the_key(tmp_path, capsys, yaml, message):
    cfg = tmp_path / "run.yaml"
    cfg.write_text(yaml)
    assert main(["run", "slide.svs", "--config", str(cfg)]) == 1
    err = capsys.readouterr().err
    assert message in err and str(cfg) in err, err


def test_automatic_reader_threads():
    s = RunSettings()
    assert s.reader_threads("onnxruntime") == 1 and 2 <= s.reader_threads("tensorrt") <= 4
    with pytest.raises(ConfigError, match="readers"):
        resolve(RunSettings, {"readers": -1})


def test_help_is_light():
    heavy = ("torch", "onnxruntime", "onnx", "tensorrt", "cuda", "numba", "shapely")
    code = "\n".join(
        [
            "import sys",
            "from cellvit_trt.cli import main",
            "try:",
            "    main(['run', '--help'])",
            "except SystemExit:",
            "    pass",
            f"print('HEAVY', [m for m in {heavy!r} if m in sys.modules])",
        ]
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60).stdout
    assert "--resume" in out and "--providers" in out and "HEAVY []" in out, out
