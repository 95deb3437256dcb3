"""Contract tests of the builder against recording stand-ins of the TensorRT 10.x and 11.x Python surfaces.

They pin the call sequence the build must make on both major versions (strongly typed, no precision flags,
profile, workspace, optimisation level, timing cache, parser errors, feature-detected options) and the cache
behaviour around it on real files. Numerics need real TensorRT: see test_engine_gpu.py.
"""

from __future__ import annotations

import json
import logging
import threading

import pytest
from tests.simulator.tensorrt import PLAN_MAGIC, PRECISION_FLAGS, make_tensorrt

from cellvit_trt.engine.build import build_plan
from cellvit_trt.engine.cache import ensure_engine
from cellvit_trt.engine.cuda_probe import CudaDevice
from cellvit_trt.engine.errors import EngineBuildError, EngineCacheError
from cellvit_trt.engine.settings import BuildSettings
from cellvit_trt.engine.sidecar import layers_path, load_engine_bytes, sidecar_path
from cellvit_trt.engine.timing_cache import save_timing_cache
from cellvit_trt.errors import ConfigError

SURFACES = ["10.x", "11.x"]
DEVICE = CudaDevice(
    index=0,
    name="NVIDIA H100 80GB HBM3",
    compute_capability=(9, 0),
    sm_count=132,
    total_memory=80 << 30,
    free_memory=64 << 30,
    integrated=False,
    driver_version=12080,
    runtime_version=12080,
)
ORIN = CudaDevice(
    index=0,
    name="Orin (nvgpu)",
    compute_capability=(8, 7),
    sm_count=16,
    total_memory=64 << 30,
    free_memory=40 << 30,
    integrated=True,
    driver_version=12060,
    runtime_version=12060,
)


def calls_named(trt, name):
    return [c for c in trt.calls if c[0] == name]


@pytest.fixture
def graph(tmp_path, make_cast_graph):
    return make_cast_graph(tmp_path / "m.onnx", tile=32, metadata={"model": "tiny", "tile_size": 32})


@pytest.mark.parametrize("surface", SURFACES)
def test_strongly_typed_and_no_precision_flags_contract(surface, graph, tmp_path):
    trt = make_tensorrt(surface)
    result = build_plan(trt, DEVICE, graph, BuildSettings(max_batch=8, opt_batch=4), timing_cache=None)
    (flags,) = [c[1] for c in calls_named(trt, "create_network")]
    assert flags & (1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
    explicit = getattr(trt.NetworkDefinitionCreationFlag, "EXPLICIT_BATCH", None)
    assert (explicit is not None) == (surface == "10.x")  # the 11.x enum has no EXPLICIT_BATCH at all
    if explicit is not None:
        assert flags & (1 << int(explicit))
    set_flags = {c[1] for c in calls_named(trt, "set_flag")}
    assert not set_flags & PRECISION_FLAGS
    # Order: probe happened before (caller), then Builder → network → parser → config → build → runtime.
    order = [
        c[0]
        for c in trt.calls
        if c[0]
        in (
            "Builder",
            "create_network",
            "OnnxParser",
            "parse_from_file",
            "create_builder_config",
            "build_serialized_network",
            "Runtime",
        )
    ]
    assert order == [
        "Builder",
        "create_network",
        "OnnxParser",
        "parse_from_file",
        "create_builder_config",
        "build_serialized_network",
        "Runtime",
    ]
    assert result.io == [
        {
            "name": "image",
            "mode": "input",
            "dtype": "uint8",
            "shape": [-1, 32, 32, 3],
            "profile": [[1, 32, 32, 3], [4, 32, 32, 3], [8, 32, 32, 3]],
        },
        {"name": "out", "mode": "output", "dtype": "float32", "shape": [-1, 32, 32, 3]},
    ]


@pytest.mark.parametrize("surface", SURFACES)
def test_profile_workspace_level_and_verbosity_contract(surface, graph):
    trt = make_tensorrt(surface)
    build_plan(trt, DEVICE, graph, BuildSettings(min_batch=2, max_batch=16, optimization_level=5, tf32=False))
    assert calls_named(trt, "set_shape") == [
        ("set_shape", "image", (2, 32, 32, 3), (16, 32, 32, 3), (16, 32, 32, 3))
    ]
    assert len(calls_named(trt, "add_optimization_profile")) == 1
    assert calls_named(trt, "set_memory_pool_limit") == [
        ("set_memory_pool_limit", "WORKSPACE", int(DEVICE.free_memory * 0.75))
    ]
    assert ("set", "builder_optimization_level", 5) in trt.calls
    assert ("clear_flag", "TF32") in trt.calls
    assert ("set", "profiling_verbosity", trt.ProfilingVerbosity.DETAILED) in trt.calls
    trt = make_tensorrt(surface)
    build_plan(trt, DEVICE, graph, BuildSettings(workspace_mib=1024, detailed_profiling=False))
    assert calls_named(trt, "set_memory_pool_limit") == [("set_memory_pool_limit", "WORKSPACE", 1 << 30)]
    assert not [c for c in trt.calls if c[:2] == ("set", "profiling_verbosity")]
    assert not calls_named(trt, "clear_flag")


def test_feature_detected_options_contract(graph):
    old, new = make_tensorrt("10.x"), make_tensorrt("11.x")
    build_plan(
        new, DEVICE, graph, BuildSettings(max_num_tactics=4, hardware_compatibility="same_compute_capability")
    )
    assert ("set", "max_num_tactics", 4) in new.calls
    assert (
        "set",
        "hardware_compatibility_level",
        new.HardwareCompatibilityLevel.SAME_COMPUTE_CAPABILITY,
    ) in new.calls
    with pytest.raises(ConfigError, match="build.max_num_tactics: TensorRT 10.3.0 has no max_num_tactics"):
        build_plan(old, DEVICE, graph, BuildSettings(max_num_tactics=4))
    with pytest.raises(ConfigError, match="TensorRT 10.3.0 does not offer SAME_COMPUTE_CAPABILITY"):
        build_plan(old, DEVICE, graph, BuildSettings(hardware_compatibility="same_compute_capability"))
    old = make_tensorrt("10.x")
    build_plan(
        old,
        DEVICE,
        graph,
        BuildSettings(
            hardware_compatibility="ampere_plus", version_compatible=True, exclude_lean_runtime=True
        ),
    )
    assert ("set", "hardware_compatibility_level", old.HardwareCompatibilityLevel.AMPERE_PLUS) in old.calls
    assert {"VERSION_COMPATIBLE", "EXCLUDE_LEAN_RUNTIME"} <= {c[1] for c in calls_named(old, "set_flag")}
    # A version-compatible plan embeds the lean runtime: loading it back must allow host code.
    assert calls_named(old, "deserialize_cuda_engine") == [("deserialize_cuda_engine", True)]


def test_dla_on_jetson_surface_and_refused_where_absent_contract(graph):
    dla = BuildSettings(dla_core=1, min_batch=4, max_batch=4)
    trt = make_tensorrt("10.x", num_dla_cores=2)
    build_plan(trt, ORIN, graph, dla)
    assert ("set", "default_device_type", trt.DeviceType.DLA) in trt.calls and (
        "set",
        "DLA_core",
        1,
    ) in trt.calls
    assert ("set_flag", "GPU_FALLBACK") in trt.calls
    assert calls_named(trt, "set_shape") == [
        ("set_shape", "image", (4, 32, 32, 3), (4, 32, 32, 3), (4, 32, 32, 3))
    ]
    with pytest.raises(ConfigError, match="DLA core 1 asked for, but this device has 0"):
        build_plan(make_tensorrt("10.x"), DEVICE, graph, dla)
    # TensorRT 11 still binds DeviceType.DLA (issue 12 item 7): the same build works on the 11.x surface...
    trt = make_tensorrt("11.x", num_dla_cores=2)
    build_plan(trt, ORIN, graph, dla)
    assert ("set", "default_device_type", trt.DeviceType.DLA) in trt.calls
    # ...and a TensorRT without it is refused by feature detection, not by version.
    trt = make_tensorrt("11.x", num_dla_cores=2)
    del trt.DeviceType.DLA
    with pytest.raises(ConfigError, match="TensorRT 11.4.0.106 does not offer DLA"):
        build_plan(trt, ORIN, graph, dla)


def test_builder_flag_surfaces_match_the_bindings():
    """Issue 12 item 7: the 10.x flags include WEIGHTLESS (STRIP_PLAN's old alias) and REFIT_INDIVIDUAL;
    11.x keeps REFIT_INDIVIDUAL and drops every precision flag."""
    old, new = make_tensorrt("10.x"), make_tensorrt("11.x")
    assert hasattr(old.BuilderFlag, "WEIGHTLESS") and hasattr(old.BuilderFlag, "REFIT_INDIVIDUAL")
    assert hasattr(new.BuilderFlag, "REFIT_INDIVIDUAL") and not hasattr(new.BuilderFlag, "WEIGHTLESS")
    assert not [f for f in PRECISION_FLAGS if hasattr(new.BuilderFlag, f)]
    assert hasattr(old.DeviceType, "DLA") and hasattr(new.DeviceType, "DLA")


@pytest.mark.parametrize("surface", SURFACES)
@pytest.mark.parametrize("legacy", [False, True])
def test_parser_errors_name_every_node_contract(surface, legacy, graph):
    errors = [
        {"node": 3, "name": "/blocks.0/attn/Attention", "op": "Attention", "desc": "opset 23 Attention"},
        {"node": 7, "name": "/decoder/Foo", "op": "Foo", "desc": "No importer registered for op: Foo"},
    ]
    trt = make_tensorrt(surface, parse_errors=errors, legacy_parser_errors=legacy)
    with pytest.raises(EngineBuildError) as exc:
        build_plan(trt, DEVICE, graph, BuildSettings())
    msg = str(exc.value)
    assert "could not parse ONNX graph" in msg and "(2 error(s))" in msg
    assert "node 3" in msg and "opset 23 Attention" in msg and "node 7" in msg and "[UNSUPPORTED_NODE]" in msg
    named = "'/blocks.0/attn/Attention' (Attention)" in msg and "'/decoder/Foo' (Foo)" in msg
    assert named == (not legacy)  # names and operators wherever the error object offers them
    assert not calls_named(trt, "build_serialized_network")


@pytest.mark.parametrize("surface", SURFACES)
def test_build_failure_quotes_tensorrt_and_names_oom_contract(surface, graph):
    log = [
        ("WARNING", "Skipping tactic 0x1 due to insufficient memory on requested size of 13089 MB"),
        ("ERROR", "[optimizer.cpp::computeCosts] Could not find any implementation for node /Conv"),
    ]
    trt = make_tensorrt(surface, build_fails=True, build_log=log)
    with pytest.raises(
        EngineBuildError,
        match="(?s)failed to build the engine.*Could not find any implementation"
        ".*lack of device memory: lower build.workspace_mib",
    ):
        build_plan(trt, DEVICE, graph, BuildSettings())


@pytest.mark.parametrize("surface", SURFACES)
def test_timing_cache_loaded_merged_and_saved_contract(surface, graph, tmp_path):
    cache = tmp_path / "tc" / "gpu.timing"
    trt = make_tensorrt(surface)
    build_plan(trt, DEVICE, graph, BuildSettings(max_batch=8), timing_cache=cache)
    assert calls_named(trt, "create_timing_cache")[0] == ("create_timing_cache", b"")  # nothing saved yet
    assert b"image:(8, 32, 32, 3)" in cache.read_bytes()
    trt = make_tensorrt(surface)
    build_plan(trt, DEVICE, graph, BuildSettings(max_batch=2), timing_cache=cache)
    loaded = calls_named(trt, "create_timing_cache")[0][1]
    assert b"image:(8, 32, 32, 3)" in loaded  # the second build started from the first one's timings
    data = cache.read_bytes()
    assert b"image:(8, 32, 32, 3)" in data and b"image:(2, 32, 32, 3)" in data
    assert sorted(p.name for p in cache.parent.iterdir()) == ["gpu.timing", "gpu.timing.lock"]


def test_corrupt_timing_cache_is_replaced_contract(graph, tmp_path):
    cache = tmp_path / "gpu.timing"
    cache.write_bytes(b"garbage")
    build_plan(make_tensorrt("11.x"), DEVICE, graph, BuildSettings(), timing_cache=cache)
    assert cache.read_bytes().startswith(b"standin-timing-cache")


def test_concurrent_saves_lose_no_timings_contract(tmp_path):
    trt = make_tensorrt("11.x")
    path = tmp_path / "gpu.timing"

    def save(i):
        config = trt.Builder(None).create_builder_config()
        cache = config.create_timing_cache(b"")
        cache.entries.add(f"tactic-{i}".encode())
        config.set_timing_cache(cache, False)
        save_timing_cache(config, path)

    threads = [threading.Thread(target=save, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(f"tactic-{i}".encode() in path.read_bytes() for i in range(8))


FUSED = {
    "Layers": [
        {"Name": "_gemm_mha_v2_myl0", "LayerType": "kgen", "Inputs": [], "Outputs": [], "TacticName": "fmha"}
    ]
}
UNFUSED = {
    "Layers": [
        {"Name": "mm1", "LayerType": "MatrixMultiply", "Inputs": [{"Name": "x"}], "Outputs": [{"Name": "s"}]},
        {
            "Name": "/attn/Softmax",
            "LayerType": "SoftMax",
            "Inputs": [{"Name": "s"}],
            "Outputs": [{"Name": "p"}],
        },
        {"Name": "mm2", "LayerType": "MatrixMultiply", "Inputs": [{"Name": "p"}], "Outputs": [{"Name": "o"}]},
    ]
}


@pytest.mark.parametrize("surface", SURFACES)
def test_engine_cache_end_to_end_contract(surface, graph, tmp_path, caplog):
    settings = BuildSettings(max_batch=4, timing_cache_dir=tmp_path / "tc")
    trt = make_tensorrt(surface, layer_info=FUSED)
    first = ensure_engine(graph, settings, trt=trt, device=DEVICE)
    assert first.built and first.path == tmp_path / "m.engine"
    side = json.loads(sidecar_path(first.path).read_text())
    assert side["metadata"] == {"model": "tiny", "tile_size": 32}
    assert side["key"] == first.key and side["onnx"]["sha256"] == side["key_fields"]["onnx_sha256"]
    assert side["versions"]["tensorrt"] == trt.__version__ and side["device"]["name"] == DEVICE.name
    assert [t["name"] for t in side["io"]] == ["image", "out"] and side["build"]["tile_size"] == 32
    assert side["build"]["attention"]["verdict"] == "fused"
    assert json.loads(layers_path(first.path).read_text()) == FUSED
    assert load_engine_bytes(first.path, first.key).startswith(PLAN_MAGIC)

    trt2 = make_tensorrt(surface)
    again = ensure_engine(graph, settings, trt=trt2, device=DEVICE)
    assert not again.built and again.reason == "cache hit" and again.key == first.key
    assert not calls_named(trt2, "Builder")  # a hit creates no TensorRT object at all

    caplog.set_level(logging.WARNING, logger="cellvit_trt.engine.cache")
    stale = ensure_engine(
        graph,
        BuildSettings(max_batch=8, timing_cache_dir=tmp_path / "tc"),
        trt=make_tensorrt(surface),
        device=DEVICE,
    )
    assert stale.built and "stale: setting max_batch: engine 4, wanted 8" in stale.reason
    assert "rebuilding" in caplog.text

    foreign = ensure_engine(
        graph,
        BuildSettings(max_batch=8, timing_cache_dir=tmp_path / "tc"),
        trt=make_tensorrt(surface),
        device=ORIN,
    )
    assert (
        foreign.built and "is foreign" in foreign.reason and "gpu_name: engine 'NVIDIA H100" in foreign.reason
    )

    data = foreign.path.read_bytes()
    foreign.path.write_bytes(data[:-10])
    never = BuildSettings(max_batch=8, timing_cache_dir=tmp_path / "tc", rebuild="never")
    with pytest.raises(EngineCacheError, match="truncated.*not rebuilding \\(--no-rebuild\\)") as exc:
        ensure_engine(graph, never, trt=make_tensorrt(surface), device=ORIN)
    assert exc.value.reason == "truncated"
    fixed = ensure_engine(
        graph,
        BuildSettings(max_batch=8, timing_cache_dir=tmp_path / "tc"),
        trt=make_tensorrt(surface),
        device=ORIN,
    )
    assert fixed.built and "truncated" in fixed.reason
    assert ensure_engine(graph, never, trt=make_tensorrt(surface), device=ORIN).reason == "cache hit"
    forced = ensure_engine(
        graph,
        BuildSettings(max_batch=8, timing_cache_dir=tmp_path / "tc", rebuild="always"),
        trt=make_tensorrt(surface),
        device=ORIN,
    )
    assert forced.built and "--rebuild" in forced.reason


def test_unfused_attention_warns_or_fails_contract(tmp_path, make_attention_graph, caplog):
    graph = make_attention_graph(tmp_path / "a.onnx", blocks=2)
    settings = BuildSettings(max_batch=2, timing_cache=False)
    caplog.set_level(logging.WARNING)
    art = ensure_engine(graph, settings, trt=make_tensorrt("11.x", layer_info=UNFUSED), device=DEVICE)
    assert art.attention.verdict == "unfused" and "attention did not fuse" in caplog.text
    strict = BuildSettings(
        max_batch=2, timing_cache=False, require_fused_attention=True, output=tmp_path / "s.engine"
    )
    with pytest.raises(EngineBuildError, match="require_fused_attention is set; the engine was not written"):
        ensure_engine(graph, strict, trt=make_tensorrt("11.x", layer_info=UNFUSED), device=DEVICE)
    assert not (tmp_path / "s.engine").exists() and layers_path(tmp_path / "s.engine").exists()
    art = ensure_engine(graph, strict, trt=make_tensorrt("11.x", layer_info=FUSED), device=DEVICE)
    assert art.built and art.attention.verdict == "fused"


def test_cli_build_contract(graph, tmp_path, monkeypatch, capsys):
    from cellvit_trt import cli

    trt = make_tensorrt("10.x")
    monkeypatch.setattr("cellvit_trt.engine.cache.require_gpu_stack", lambda index, trt_=None: (trt, ORIN))
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"build:\n  max_batch: 2\n  timing_cache_dir: {tmp_path / 'tc'}\n")
    out = tmp_path / "out" / "x.engine"
    assert cli.main(["build", str(graph), "-o", str(out), "--config", str(cfg), "--opt-batch", "1"]) == 0
    text = capsys.readouterr().out
    assert f"engine: {out} (built in" in text and "input  image: uint8[-1, 32, 32, 3]" in text
    assert calls_named(trt, "set_shape") == [
        ("set_shape", "image", (1, 32, 32, 3), (1, 32, 32, 3), (2, 32, 32, 3))
    ]
    assert (
        cli.main(
            [
                "build",
                str(graph),
                "-o",
                str(out),
                "--config",
                str(cfg),
                "--opt-batch",
                "1",
                "--no-rebuild",
                "--json",
            ]
        )
        == 0
    )
    assert json.loads(capsys.readouterr().out)["reason"] == "cache hit"
    # --sign: the built (or reused) engine is signed; a run that trusts the key loads it
    from cellvit_trt.engine.sidecar import load_engine_bytes as load

    from .signing_keys import make_key

    private, public = make_key(tmp_path / "keys", "builder")
    (tmp_path / "trusted").mkdir()
    (tmp_path / "trusted" / "builder.pub").write_bytes(public)
    args = ["build", str(graph), "-o", str(out), "--config", str(cfg), "--opt-batch", "1"]
    args += ["--sign", str(private)]
    assert cli.main(args) == 0
    assert f"signed: {out}.sig" in capsys.readouterr().out
    assert load(out, trusted_keys=tmp_path / "trusted") == out.read_bytes()
    assert cli.main([*args[:-1], str(tmp_path / "trusted" / "builder.pub")]) == 1  # not a private key
    assert "not an unencrypted PEM private key" in capsys.readouterr().err
    assert cli.main(["build", str(graph), "-o", str(out), "--config", str(cfg), "--no-rebuild"]) == 1
    assert "is stale: setting opt_batch: engine 1, wanted 2" in capsys.readouterr().err


@pytest.mark.parametrize("surface", SURFACES)
def test_progress_and_ctrl_c_cancel_contract(surface, graph):
    messages = []
    build_plan(make_tensorrt(surface), DEVICE, graph, BuildSettings(), progress=messages.append)
    assert messages[0] == "TensorRT: Building engine (2 steps)"  # top-level phases only
    assert messages[1].startswith("TensorRT: Building engine done in") and len(messages) == 2

    def interrupted(text):
        raise KeyboardInterrupt  # what Ctrl-C looks like inside a TensorRT callback

    trt = make_tensorrt(surface)
    with pytest.raises(KeyboardInterrupt, match="TensorRT build cancelled"):
        build_plan(trt, DEVICE, graph, BuildSettings(), progress=interrupted)
    assert ("build cancelled",) in trt.calls and not calls_named(trt, "Runtime")


def test_concurrent_callers_build_once_contract(graph, tmp_path):
    settings = BuildSettings(max_batch=2, timing_cache=False)
    standins = [make_tensorrt("11.x") for _ in range(4)]
    results = [None] * 4

    def call(i):
        results[i] = ensure_engine(graph, settings, trt=standins[i], device=DEVICE)

    threads = [threading.Thread(target=call, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(len(calls_named(t, "build_serialized_network")) for t in standins) == 1
    assert sorted(r.built for r in results) == [False, False, False, True]
    assert len({r.key for r in results}) == 1 and load_engine_bytes(results[0].path, results[0].key)
