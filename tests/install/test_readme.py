"""Every code block of the README is executed, or, where it needs what this machine lacks, checked to parse.

The fenced blocks are read out of README.md. In one temporary folder, in README order:
- `cellvit-trt ...` commands run for real (the installed entry point), unless they need the official weights,
  a GPU with TensorRT or the PanNuke data (NEEDS below): those are parsed by the command's own argparse
  parser, as `--help`-level validation, and listed as such in the test ids;
- `pip ...` lines must name extras that pyproject.toml declares (installing them for real is the job of
  test_extras_install.py, which builds the wheel and installs each extra into a fresh venv);
- `bash scripts/*.sh` lines must name scripts that exist (they are the demo and this very suite);
- python blocks run as written, after the bash blocks, with the files those made.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()
CLI = Path(sys.executable).with_name("cellvit-trt")

# what a command needs that this machine lacks -> it is parsed, not run
NEEDS = [
    (re.compile(r"CellViT-[\w-]+\.pth|cellvit256\.|\.int8\.onnx"), "the official CellViT weights"),
    (re.compile(r"\.engine\b|^build\b|--backend tensorrt"), "an NVIDIA GPU with TensorRT"),
    (re.compile(r"pannuke/"), "the PanNuke data set"),
]


def blocks(lang: str) -> list[str]:
    return re.findall(rf"^```{lang}\n(.*?)^```", README, re.S | re.M)


def commands(block: str) -> list[str]:
    """Shell lines with continuations joined and comments removed."""
    text = block.replace("\\\n", " ")
    out = []
    for line in text.splitlines():
        parts = shlex.split(line, comments=True)
        if parts:
            out.append(shlex.join(parts))
    return out


def classify(cmd: str) -> tuple[str, str]:
    argv = shlex.split(cmd)
    if argv[0] == "cellvit-trt":
        rest = " ".join(argv[1:])
        for pattern, need in NEEDS:
            if pattern.search(rest):
                return "parse", need
        return "run", ""
    if argv[0] == "pip":
        return "pip", "installed for real by tests/install/test_extras_install.py"
    if argv[0] == "bash":
        return "script", "the demo / this suite"
    return "unknown", ""


ALL = [(cmd, *classify(cmd)) for block in blocks("bash") for cmd in commands(block)]


def test_readme_has_runnable_blocks_and_every_command_is_known():
    kinds = {kind for _, kind, _ in ALL}
    assert "unknown" not in kinds, [c for c, k, _ in ALL if k == "unknown"]
    assert sum(k == "run" for _, k, _ in ALL) >= 5, "the first-run block runs for real"
    assert blocks("python"), "a Python example"
    assert "pip install cellvit-trt" not in README, "no index serves it: install from a checkout or a wheel"


@pytest.mark.parametrize(
    "cmd,need",
    [(c, n) for c, k, n in ALL if k == "parse"],
    ids=[f"parse-only ({n}): {c}" for c, k, n in ALL if k == "parse"],
)
def test_commands_that_need_weights_or_a_gpu_parse(cmd, need):
    from cellvit_trt.cli import COMMANDS, _parser

    argv = shlex.split(cmd)[1:]
    assert argv[0] in COMMANDS
    try:
        _parser(argv[0]).parse_args(argv)
    except SystemExit as exc:
        pytest.fail(f"README command does not parse ({need} aside): {cmd} (exit {exc.code})")


def test_pip_lines_name_declared_extras():
    extras = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"])
    for cmd, kind, _ in ALL:
        if kind == "pip":
            for group in re.findall(r"\[([\w,]+)\]", cmd):
                unknown = set(group.split(",")) - extras
                assert not unknown, f"{cmd}: extras {unknown} are not declared"


def test_scripts_exist():
    for cmd, kind, _ in ALL:
        if kind == "script":
            assert (ROOT / shlex.split(cmd)[1]).is_file(), cmd


def test_runnable_blocks_and_the_python_example_run_as_written(tmp_path):
    for cmd, kind, _ in ALL:
        if kind != "run":
            continue
        argv = shlex.split(cmd)
        p = subprocess.run([str(CLI), *argv[1:]], cwd=tmp_path, capture_output=True, text=True, timeout=600)
        assert p.returncode == 0, f"README command failed: {cmd}\n{p.stdout[-2000:]}\n{p.stderr[-3000:]}"
    assert any(tmp_path.joinpath("results").rglob("cells.geojson")), "the runs wrote cells"
    for i, code in enumerate(blocks("python")):
        p = subprocess.run(
            [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=600
        )
        assert p.returncode == 0, f"README python block {i} failed:\n{code}\n{p.stderr[-3000:]}"
    assert (tmp_path / "tile0.geojson").stat().st_size > 100
