"""Typed settings from YAML and flags: errors name the file and key; flags override the file."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import pytest

from cellvit_trt.config import resolve, to_dict
from cellvit_trt.errors import ConfigError


@dataclass(frozen=True)
class S:
    batch: int = 1
    precision: Literal["fp32", "fp16"] = "fp32"
    out: Path | None = None
    ratio: float = 0.5
    names: list[str] | None = None

    def validate(self) -> None:
        if self.batch < 1:
            raise ValueError(f"batch: got {self.batch}, expected >= 1")


def test_section_then_flags_override(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("run:\n  batch: 4\n  precision: fp16\n  ratio: 1\n  out: results\n")
    args = argparse.Namespace(config=cfg, batch=8, precision=None, unrelated="x")
    s = resolve(S, args, section="run")
    assert s == S(batch=8, precision="fp16", out=Path("results"), ratio=1.0)
    assert to_dict(s)["out"] == "results"


@pytest.mark.parametrize(
    "yaml_text, match",
    [
        ("run:\n  bach: 4\n", r"c\.yaml \[run\]: unknown key\(s\) \['bach'\]"),
        ("run:\n  batch: four\n", r"c\.yaml \[run\]\.batch: expected int, got 'four'"),
        ("run:\n  precision: int4\n", r"precision: expected one of 'fp32', 'fp16'"),
        ("run:\n  names: [a, 3]\n", r"names\[1\]: expected str"),
        ("run:\n  batch: 0\n", r"batch: got 0, expected >= 1"),
        ("- a\n- b\n", r"expected a mapping at top level"),
        ("run: [\n", r"not valid YAML"),
    ],
)
def test_errors_name_file_and_key(tmp_path, yaml_text, match):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml_text)
    with pytest.raises(ConfigError, match=match):
        resolve(S, {"config": cfg}, section="run")


def test_missing_file_is_named(tmp_path):
    with pytest.raises(ConfigError, match="nope.yaml: not found"):
        resolve(S, {"config": tmp_path / "nope.yaml"})


def test_bool_is_not_an_int():
    with pytest.raises(ConfigError, match="batch: expected int, got True"):
        resolve(S, {"batch": True})
