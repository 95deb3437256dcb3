"""BuildSettings: validation, YAML `build:` section, flags override, profile planning from the graph shape."""

from __future__ import annotations

import argparse

import pytest

from cellvit_trt.config import resolve
from cellvit_trt.engine import cli
from cellvit_trt.engine.builder_config import plan_profile
from cellvit_trt.engine.settings import BuildSettings
from cellvit_trt.errors import ConfigError, InputError


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"min_batch": 0}, "build.min_batch: expected an integer >= 1, got 0"),
        ({"min_batch": 4, "max_batch": 2}, "min_batch <= opt_batch <= max_batch, got 4 <= 2 <= 2"),
        ({"opt_batch": 9, "max_batch": 8}, "got 1 <= 9 <= 8"),
        ({"optimization_level": 6}, "build.optimization_level: expected 0..5, got 6"),
        ({"exclude_lean_runtime": True}, "only meaningful with version_compatible"),
        ({"dla_core": 0}, "the DLA needs a static batch"),
        ({"dla_core": -1, "min_batch": 8}, "DLA core index >= 0"),
        ({"workspace_mib": 0}, "workspace_mib"),
        ({"device": -1}, "CUDA device index"),
    ],
)
def test_invalid_settings_raise_config_error(kwargs, message):
    with pytest.raises(ConfigError, match=message.replace("(", "\\(").replace(")", "\\)")):
        BuildSettings(**kwargs)


def _parse(argv):
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    return parser.parse_args(argv)


def test_yaml_section_and_flags(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        "build:\n  max_batch: 16\n  optimization_level: 5\n  tf32: false\n"
        "  hardware_compatibility: ampere_plus\n  timing_cache_dir: /tmp/tc\n"
    )
    s = resolve(
        BuildSettings,
        _parse(["m.onnx", "--config", str(cfg), "--max-batch", "4", "--no-rebuild"]),
        section="build",
    )
    assert (s.max_batch, s.optimization_level, s.tf32, s.hardware_compatibility, s.rebuild) == (
        4,
        5,
        False,
        "ampere_plus",
        "never",
    )
    assert str(s.timing_cache_dir) == "/tmp/tc" and s.resolved_opt_batch == 4
    assert resolve(BuildSettings, _parse(["m.onnx"]), section="build") == BuildSettings()


def test_every_setting_has_a_flag():
    import dataclasses

    dests = {a.dest for a in _build_parser()._actions}
    missing = [f.name for f in dataclasses.fields(BuildSettings) if f.name not in dests]
    assert missing == []


def _build_parser():
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    return parser


def test_yaml_errors_name_the_key(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("build:\n  max_batch: many\n")
    with pytest.raises(ConfigError, match=r"\[build\]\.max_batch: expected int, got 'many'"):
        resolve(BuildSettings, _parse(["m.onnx", "--config", str(cfg)]), section="build")
    cfg.write_text("build:\n  fp16: true\n")  # precision comes from the graph, there is no such option
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['fp16'\]"):
        resolve(BuildSettings, _parse(["m.onnx", "--config", str(cfg)]), section="build")


def test_profile_from_graph_shape():
    plan = plan_profile({"image": (-1, 256, 256, 3)}, BuildSettings(min_batch=1, opt_batch=4, max_batch=8))
    assert plan.shapes == {"image": ((1, 256, 256, 3), (4, 256, 256, 3), (8, 256, 256, 3))}
    assert plan.tile_size == 256 and plan.fixed_batch is None


def test_profile_dynamic_tile_needs_tile_size():
    with pytest.raises(InputError, match="input 'image' has dynamic dims \\[1, 2\\]"):
        plan_profile({"image": (-1, -1, -1, 3)}, BuildSettings())
    plan = plan_profile({"image": (-1, -1, -1, 3)}, BuildSettings(tile_size=1024, max_batch=2))
    assert plan.shapes["image"][2] == (2, 1024, 1024, 3) and plan.tile_size == 1024


def test_profile_rejects_tile_size_that_contradicts_the_graph():
    with pytest.raises(ConfigError, match="build.tile_size: 1024 given, but input 'image'"):
        plan_profile({"image": (-1, 256, 256, 3)}, BuildSettings(tile_size=1024))
    assert plan_profile({"image": (-1, 256, 256, 3)}, BuildSettings(tile_size=256)).tile_size == 256


def test_profile_fixed_batch_graph_needs_no_profile():
    plan = plan_profile({"image": (2, 3, 64, 64)}, BuildSettings())
    assert plan.shapes == {} and plan.fixed_batch == 2 and plan.tile_size == 64
