"""Settings files from outside (issue 16, item 11): the 369-byte billion-laughs YAML is refused while parsing,
files are size-bounded, and no error message grows with the value it quotes."""

from __future__ import annotations

import subprocess
import sys

import pytest

from cellvit_trt.config import CONFIG_MAX_BYTES, resolve
from cellvit_trt.errors import ConfigError
from cellvit_trt.runtime.settings import RunSettings

LAUGHS = "\n".join(
    ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    + [f"{c}: &{c} [{','.join(['*' + p] * 9)}]" for p, c in zip("abcdefgh", "bcdefghi", strict=True)]
    + ["run:", "  batch: *i"]  # printing the value in "batch: expected int, got ..." expands 9**9 strings
)


def test_billion_laughs_is_refused_in_bounded_memory(tmp_path):
    cfg = tmp_path / "laughs.yaml"
    cfg.write_text(LAUGHS + "\n")
    assert len(cfg.read_bytes()) < 700  # the whole attack: 9**9 strings once expanded
    code = (
        "import resource, sys\n"
        "resource.setrlimit(resource.RLIMIT_AS, (768 << 20, 768 << 20))\n"
        "from cellvit_trt.config import resolve\n"
        "from cellvit_trt.errors import ConfigError\n"
        "from cellvit_trt.runtime.settings import RunSettings\n"
        "try:\n"
        "    resolve(RunSettings, {}, section='run', config=sys.argv[1])\n"
        "except ConfigError as exc:\n"
        "    print('REFUSED', len(str(exc)), str(exc)[:300])\n"
    )
    r = subprocess.run([sys.executable, "-c", code, str(cfg)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "REFUSED" in r.stdout, (r.stdout[-500:], r.stderr[-1500:])
    length = int(r.stdout.split()[1])
    assert "aliases (*a) are not allowed" in r.stdout and str(cfg) in r.stdout and length < 1000, r.stdout


def test_messages_quote_values_shortly_and_files_are_bounded(tmp_path):
    cfg = tmp_path / "big.yaml"
    cfg.write_text("run:\n  batch: [" + ", ".join(str(i) for i in range(5_000)) + "]\n")
    with pytest.raises(ConfigError) as err:
        resolve(RunSettings, {}, section="run", config=cfg)
    assert "batch: expected int, got [0, 1, 2" in str(err.value) and len(str(err.value)) < 500
    huge = tmp_path / "huge.yaml"
    huge.write_text("run:\n  model: '" + "x" * CONFIG_MAX_BYTES + "'\n")
    with pytest.raises(ConfigError, match="more than the"):
        resolve(RunSettings, {}, section="run", config=huge)
    anchors = tmp_path / "anchors.yaml"  # an anchor without an alias is plain YAML
    anchors.write_text("run:\n  outputs: &o [geojson, summary]\n")
    assert resolve(RunSettings, {}, section="run", config=anchors).outputs == ["geojson", "summary"]


def test_gate_thresholds_files_are_settings_files_too(tmp_path):
    """`export --gate-thresholds` / `validate --thresholds` read a user's YAML: same refusals as --config."""
    from cellvit_trt.export.gate import load_thresholds

    laughs = tmp_path / "thresholds.yaml"
    laughs.write_text(LAUGHS.replace("run:\n  batch: *i", "fp16:\n  min: *i") + "\n")
    with pytest.raises(ConfigError, match=r"aliases \(\*a\) are not allowed"):
        load_thresholds("fp16", str(laughs))
    big = tmp_path / "big.yaml"
    big.write_text("fp16:\n  min: {}\n" + "#" * CONFIG_MAX_BYTES)
    with pytest.raises(ConfigError, match="larger than"):
        load_thresholds("fp16", str(big))
    tagged = tmp_path / "tagged.yaml"
    tagged.write_text("fp16: !!python/object/apply:os.system ['true']\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_thresholds("fp16", str(tagged))
