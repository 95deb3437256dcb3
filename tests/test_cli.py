"""The CLI dispatcher: every command's --help works, and the core CLI imports nothing heavy."""

from __future__ import annotations

import subprocess
import sys

import pytest

from cellvit_trt.cli import COMMANDS, main


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_command_has_help(command, capsys):
    with pytest.raises(SystemExit) as exc:
        main([command, "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: cellvit-trt " + command)


def test_no_command_prints_help_and_exits_2(capsys):
    assert main([]) == 2
    assert "export" in capsys.readouterr().out


def test_top_level_help_imports_no_heavy_module():
    # `cellvit-trt --help` must work with the core dependencies alone: it may not import torch, onnx,
    # onnxruntime or tensorrt (checked in a fresh interpreter, since this test process may have them loaded).
    code = (
        "import sys\n"
        "from cellvit_trt.cli import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        "heavy = [m for m in ('torch', 'onnx', 'onnxruntime', 'tensorrt', 'cuda') if m in sys.modules]\n"
        "print('HEAVY', heavy)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "HEAVY []" in out, out


def test_error_exit_code_and_message(tmp_path, capsys):
    missing = tmp_path / "nope.onnx"
    assert main(["info", str(missing)]) == 1
    err = capsys.readouterr().err
    assert str(missing) in err
