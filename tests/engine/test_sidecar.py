"""The engine cache never lies: key coverage, atomic writes and every refusal, checked on real files."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging

import pytest

from cellvit_trt.engine.cuda_probe import CudaDevice
from cellvit_trt.engine.environment import Environment, cache_key, explain_difference, key_fields
from cellvit_trt.engine.errors import EngineCacheError
from cellvit_trt.engine.settings import BuildSettings
from cellvit_trt.engine.sidecar import load_engine_bytes, read_sidecar, sidecar_path, write_engine

ENV = Environment(
    tensorrt="10.3.0",
    cuda_major=12,
    gpu_name="Orin (nvgpu)",
    compute_capability="8.7",
    sm_count=16,
    os="Linux",
    arch="aarch64",
)
ONNX_SHA = hashlib.sha256(b"graph").hexdigest()
PLAN = bytes(range(256)) * 64


def _write(path, settings=None, env=ENV, plan=PLAN):
    settings = settings or BuildSettings()
    fields = key_fields(ONNX_SHA, settings, env)
    key = cache_key(fields)
    write_engine(path, plan, {"key": key, "key_fields": fields, "metadata": {"model": "tiny"}})
    return key, fields


def test_key_changes_with_every_input():
    base = cache_key(key_fields(ONNX_SHA, BuildSettings(), ENV))
    assert base == cache_key(key_fields(ONNX_SHA, BuildSettings(), ENV))  # deterministic
    variants = [key_fields(hashlib.sha256(b"other").hexdigest(), BuildSettings(), ENV)]
    for name, value in [
        ("max_batch", 16),
        ("min_batch", 2),
        ("opt_batch", 4),
        ("optimization_level", 5),
        ("workspace_mib", 512),
        ("tf32", False),
        ("version_compatible", True),
        ("hardware_compatibility", "ampere_plus"),
        ("detailed_profiling", False),
        ("max_num_tactics", 3),
        ("max_aux_streams", 0),
        ("tile_size", 64),
    ]:
        variants.append(key_fields(ONNX_SHA, BuildSettings(**{name: value}), ENV))
    for field in dataclasses.fields(Environment):
        value = getattr(ENV, field.name)
        changed = value + 1 if isinstance(value, int) else value + "x"
        variants.append(
            key_fields(ONNX_SHA, BuildSettings(), dataclasses.replace(ENV, **{field.name: changed}))
        )
    keys = {cache_key(v) for v in variants}
    assert base not in keys and len(keys) == len(variants)


def test_output_and_rebuild_policy_do_not_change_the_key(tmp_path):
    a = cache_key(key_fields(ONNX_SHA, BuildSettings(), ENV))
    b = cache_key(
        key_fields(
            ONNX_SHA,
            BuildSettings(output=tmp_path / "x.engine", rebuild="never", timing_cache_dir=tmp_path, device=0),
            ENV,
        )
    )
    assert a == b
    # opt_batch=None means "max": the same engine as opt_batch=max
    assert cache_key(key_fields(ONNX_SHA, BuildSettings(max_batch=4, opt_batch=4), ENV)) == cache_key(
        key_fields(ONNX_SHA, BuildSettings(max_batch=4), ENV)
    )


def test_round_trip_and_sidecar_content(tmp_path):
    path = tmp_path / "m.engine"
    key, _ = _write(path)
    assert load_engine_bytes(path, key) == PLAN
    side = json.loads(sidecar_path(path).read_text())
    assert side["engine"] == {
        "file": "m.engine",
        "sha256": hashlib.sha256(PLAN).hexdigest(),
        "size": len(PLAN),
    }
    assert side["key"] == key and side["metadata"] == {"model": "tiny"}
    assert read_sidecar(path)["key_fields"]["gpu_name"] == "Orin (nvgpu)"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.engine", "m.engine.json"]  # no temp files left


def test_truncated_engine_is_refused(tmp_path):
    path = tmp_path / "m.engine"
    key, _ = _write(path)
    path.write_bytes(PLAN[: len(PLAN) // 2])
    with pytest.raises(EngineCacheError, match="truncated: 8192 of 16384 bytes") as exc:
        load_engine_bytes(path, key)
    assert exc.value.reason == "truncated"


@pytest.mark.parametrize("change", ["flip", "append"])
def test_tampered_engine_is_refused(tmp_path, change):
    path = tmp_path / "m.engine"
    key, _ = _write(path)
    data = bytearray(PLAN)
    if change == "flip":
        data[1000] ^= 1
    else:
        data += b"\0"
    path.write_bytes(bytes(data))
    with pytest.raises(EngineCacheError, match="tampered or corrupt") as exc:
        load_engine_bytes(path, key)
    assert exc.value.reason == "tampered"


def test_foreign_engine_names_what_differs(tmp_path):
    path = tmp_path / "m.engine"
    _write(path)
    here = dataclasses.replace(
        ENV, tensorrt="11.4.0", gpu_name="NVIDIA H100 80GB HBM3", compute_capability="9.0"
    )
    fields = key_fields(ONNX_SHA, BuildSettings(), here)
    with pytest.raises(
        EngineCacheError, match="is foreign: .*gpu_name: engine 'Orin \\(nvgpu\\)', here 'NVIDIA H100"
    ) as exc:
        load_engine_bytes(path, cache_key(fields), expected_fields=fields)
    assert exc.value.reason == "foreign" and "tensorrt: engine '10.3.0', here '11.4.0'" in str(exc.value)
    # Without a key, the environment alone is enough to refuse it.
    with pytest.raises(EngineCacheError, match="foreign") as exc:
        load_engine_bytes(path, environment=here)
    assert load_engine_bytes(path, environment=ENV) == PLAN


def test_stale_engine_says_which_setting_or_graph_changed(tmp_path):
    path = tmp_path / "m.engine"
    _write(path)
    fields = key_fields(ONNX_SHA, BuildSettings(max_batch=16), ENV)
    with pytest.raises(EngineCacheError, match="is stale: setting max_batch: engine 8, wanted 16") as exc:
        load_engine_bytes(path, expected_fields=fields)
    assert exc.value.reason == "stale"
    fields = key_fields(hashlib.sha256(b"new graph").hexdigest(), BuildSettings(), ENV)
    with pytest.raises(EngineCacheError, match="is stale: ONNX changed"):
        load_engine_bytes(path, expected_fields=fields)
    with pytest.raises(EngineCacheError, match="built for another graph, settings or machine") as exc:
        load_engine_bytes(path, cache_key(fields))
    assert exc.value.reason == "stale"


def test_missing_engine_or_sidecar(tmp_path):
    path = tmp_path / "m.engine"
    with pytest.raises(EngineCacheError, match="not found") as exc:
        load_engine_bytes(path)
    assert exc.value.reason == "missing"
    path.write_bytes(PLAN)  # an engine from elsewhere, without provenance
    with pytest.raises(EngineCacheError, match="no sidecar m.engine.json") as exc:
        load_engine_bytes(path)
    assert exc.value.reason == "no-sidecar"


@pytest.mark.parametrize("text", ["{not json", "[]", '{"format": "cellvit-trt-engine/1"}'])
def test_unreadable_sidecar(tmp_path, text):
    path = tmp_path / "m.engine"
    _write(path)
    sidecar_path(path).write_text(text)
    with pytest.raises(EngineCacheError) as exc:
        load_engine_bytes(path)
    assert exc.value.reason == "bad-sidecar"


def test_sidecar_edited_to_claim_another_machine_is_caught(tmp_path):
    path = tmp_path / "m.engine"
    key, _ = _write(path)
    side = json.loads(sidecar_path(path).read_text())
    side["key_fields"]["gpu_name"] = "NVIDIA H100"  # key left as it was
    sidecar_path(path).write_text(json.dumps(side))
    with pytest.raises(EngineCacheError, match="key does not match its key_fields") as exc:
        load_engine_bytes(path, key)
    assert exc.value.reason == "bad-sidecar"


def test_failed_write_leaves_the_old_engine_intact(tmp_path, monkeypatch):
    path = tmp_path / "m.engine"
    key, fields = _write(path)
    with pytest.raises(TypeError):  # a record that is not JSON: nothing is written at all
        write_engine(path, b"new plan", {"key": key, "key_fields": fields, "bad": object()})
    assert load_engine_bytes(path, key) == PLAN

    def crash(fd):
        raise OSError("disk full")

    monkeypatch.setattr("os.fsync", crash)  # the write dies before the rename
    with pytest.raises(OSError, match="disk full"):
        write_engine(path, b"new plan", {"key": key, "key_fields": fields})
    monkeypatch.undo()
    assert load_engine_bytes(path, key) == PLAN
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.engine", "m.engine.json"]  # no temp files left


def test_explain_difference_classifies():
    a = key_fields(ONNX_SHA, BuildSettings(), ENV)
    b = key_fields(ONNX_SHA, BuildSettings(), dataclasses.replace(ENV, cuda_major=13))
    assert explain_difference(a, b) == ("foreign", "cuda_major: engine 12, here 13")


def test_describe_engine_reads_the_sidecar(tmp_path):
    from cellvit_trt.engine.summary import describe_engine

    path = tmp_path / "m.engine"
    key, _ = _write(path)
    lines = describe_engine(path)
    assert lines[0].startswith(f"engine: {path} (0.0 MiB, key {key[:16]}") and lines[1].startswith(
        "model: tiny"
    )
    with pytest.raises(EngineCacheError, match="not found"):
        describe_engine(tmp_path / "none.engine")


def test_compatible_builds_tolerate_what_they_were_built_for(tmp_path):
    newer = dataclasses.replace(ENV, tensorrt="10.16.0", cuda_major=13)
    other_gpu = dataclasses.replace(ENV, gpu_name="NVIDIA A100", compute_capability="8.0", sm_count=108)
    same_sm = dataclasses.replace(ENV, gpu_name="Orin NX (nvgpu)", sm_count=8)
    cases = [
        (BuildSettings(version_compatible=True), newer, True),
        (BuildSettings(version_compatible=True), other_gpu, False),
        (BuildSettings(hardware_compatibility="ampere_plus"), other_gpu, True),
        (BuildSettings(hardware_compatibility="ampere_plus"), newer, False),
        (BuildSettings(hardware_compatibility="same_compute_capability"), same_sm, True),
        (BuildSettings(hardware_compatibility="same_compute_capability"), other_gpu, False),
        (BuildSettings(), same_sm, True),  # another model of the same SM: TensorRT warns, runs it
    ]
    for i, (settings, here, ok) in enumerate(cases):
        path = tmp_path / f"e{i}.engine"
        _write(path, settings)
        if ok:
            assert load_engine_bytes(path, environment=here) == PLAN
        else:
            with pytest.raises(EngineCacheError, match="is foreign"):
                load_engine_bytes(path, environment=here)


def _device(driver: int, runtime: int, name: str = "Orin (nvgpu)", sms: int = 16) -> CudaDevice:
    return CudaDevice(0, name, (8, 7), sms, 64 << 30, 40 << 30, True, driver, runtime)


def test_a_driver_update_keeps_engines_usable(tmp_path):
    """Issue 12 item 5: TensorRT does not check the driver, so neither does the cache key or the run check."""
    before = Environment.current("10.3.0", _device(driver=12060, runtime=12060))
    after = Environment.current("10.3.0", _device(driver=12080, runtime=12090))
    path = tmp_path / "m.engine"
    key, _ = _write(path, env=before)
    assert load_engine_bytes(path, environment=after) == PLAN
    assert cache_key(key_fields(ONNX_SHA, BuildSettings(), after)) == key, "a driver update rebuilds nothing"
    cuda13 = Environment.current("10.3.0", _device(driver=13000, runtime=13000))
    with pytest.raises(EngineCacheError, match="foreign: cuda_major: engine 12, here 13"):
        load_engine_bytes(path, environment=cuda13)


def test_another_gpu_model_of_the_same_sm_runs_with_a_warning(tmp_path, caplog):
    path = tmp_path / "m.engine"
    _write(path)
    nx = dataclasses.replace(ENV, gpu_name="Orin NX (nvgpu)", sm_count=8)
    with caplog.at_level(logging.WARNING):
        assert load_engine_bytes(path, environment=nx) == PLAN
    assert "another GPU model" in caplog.text and "sm_count: engine 16, here 8" in caplog.text
    with pytest.raises(EngineCacheError, match="foreign: compute_capability: engine '8.7', here '9.0'"):
        load_engine_bytes(path, environment=dataclasses.replace(nx, compute_capability="9.0"))


def test_ampere_plus_engines_refuse_older_gpus(tmp_path):
    path = tmp_path / "m.engine"
    _write(path, BuildSettings(hardware_compatibility="ampere_plus"))
    assert load_engine_bytes(path, environment=dataclasses.replace(ENV, compute_capability="9.0")) == PLAN
    with pytest.raises(EngineCacheError, match="built for Ampere or newer"):
        load_engine_bytes(path, environment=dataclasses.replace(ENV, compute_capability="7.5"))
