"""Wrong command lines fail at once with the README's exit codes, before a model, slide or torch is touched.

2 = usage (argparse, or a missing input that could also have come from --config), 1 = an input error with a
one-line message. Numeric options are validated by argparse across every command; a garbage `.pth` is refused
by a look at its first bytes, never after the seconds of importing PyTorch.
"""

from __future__ import annotations

import argparse
import logging
import subprocess
import sys

import pytest

from cellvit_trt import argtypes
from cellvit_trt.cli import COMMANDS, _parser, main


def _actions(parser: argparse.ArgumentParser):
    for action in parser._actions:
        yield action
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                yield from _actions(sub)


@pytest.mark.parametrize("command", list(COMMANDS))
def test_every_numeric_option_is_validated_by_argparse(command):
    parser = _parser(command).command_parsers[command]
    bare = [a.option_strings or [a.dest] for a in _actions(parser) if a.type in (int, float)]
    assert not bare, f"{command}: options typed as bare int/float accept -256 and nan: {bare}"


@pytest.mark.parametrize(
    "argv",
    [
        ["validate", "--candidate", "demo", "--tile-size", "-256"],
        ["bench", "--tile-size", "-256"],
        ["bench", "--duration", "nan"],
        ["run", "x.png", "--batch", "0"],
        ["run", "x.png", "--tissue-threshold", "1.5"],
        ["export", "demo", "--gate-tiles", "0"],
        ["build", "m.onnx", "--max-batch", "-1"],
        ["synth", "tiles", "--out", "t", "--size", "-8"],
        ["demo", "--tiles", "0"],
    ],
)
def test_bad_numbers_are_usage_errors(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    assert "expected" in capsys.readouterr().err


def test_argtypes_accept_good_values_and_keep_negatives_out():
    assert argtypes.positive_int("256") == 256 and argtypes.nonnegative_int("0") == 0
    assert argtypes.fraction("0.5") == 0.5 and argtypes.positive_float("0.25") == 0.25
    for fn, bad in (
        (argtypes.positive_int, "-256"),
        (argtypes.positive_float, "inf"),
        (argtypes.fraction, "-0.1"),
    ):
        with pytest.raises(argparse.ArgumentTypeError):
            fn(bad)


@pytest.mark.parametrize("command", ["export", "validate"])
def test_no_input_is_exit_2(command, capsys):
    assert main([command]) == 2
    err = capsys.readouterr().err
    assert err.startswith("usage:") and f"cellvit-trt {command}: error:" in err


def test_bench_with_a_missing_slide_fails_before_benchmarking(tmp_path, monkeypatch, capsys):
    import cellvit_trt.runtime.backends as backends

    def no_backend(*a, **k):
        raise AssertionError("a backend was opened before the slide was checked")

    monkeypatch.setattr(backends, "open_backend", no_backend)
    assert main(["bench", "--slide", str(tmp_path / "fake.svs")]) == 1
    assert "fake.svs" in capsys.readouterr().err


def test_build_on_a_checkpoint_says_export_it_first(tmp_path, capsys):
    ck = tmp_path / "model.pth"
    ck.write_bytes(b"PK\x03\x04")
    assert main(["build", str(ck)]) == 1
    err = capsys.readouterr().err
    assert "export it first" in err and f"cellvit-trt export {ck}" in err


def test_run_with_a_fake_checkpoint_fails_before_any_export_is_logged(tmp_path, caplog, capsys):
    fake = tmp_path / "fake.pth"
    fake.write_text("not a checkpoint")
    image = tmp_path / "x.png"
    image.write_bytes(b"")
    with caplog.at_level(logging.WARNING):
        assert main(["run", str(image), "-m", str(fake), "-o", str(tmp_path / "out")]) == 1
    assert not [r for r in caplog.records if "export" in r.getMessage().lower()], caplog.text
    assert "not a readable PyTorch file" in capsys.readouterr().err


@pytest.mark.parametrize("command", [["info"], ["export"], ["run", "IMAGE", "-m"]])
def test_a_garbage_pth_is_refused_without_importing_torch(tmp_path, command):
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(bytes(range(256)) * 64)
    image = tmp_path / "x.png"
    image.write_bytes(b"")
    argv = [str(image) if a == "IMAGE" else a for a in command] + [str(garbage)]
    code = (
        "import sys; from cellvit_trt.cli import main; "
        f"rc = main({argv!r}); print('TORCH' if 'torch' in sys.modules else 'LIGHT', rc)"
    )
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert p.stdout.split() == ["LIGHT", "1"], p.stdout + p.stderr
    assert "not a readable PyTorch file" in p.stderr and "Traceback" not in p.stderr
