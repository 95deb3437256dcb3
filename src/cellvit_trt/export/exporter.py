"""`export`: CellViT checkpoint -> deployment ONNX graph (FP32 / FP16 / INT8 in the graph) -> parity gate.

Steps: load -> wrap (uint8 NHWC in, decisions out) -> trace to ONNX (fixed tile, dynamic batch) -> onnxslim ->
attention-scale rewrite -> hygiene check -> precision recipe -> metadata -> onnx.checker -> parity gate ->
atomic rename. Everything is written inside a hidden work folder beside the target and moved into place only
at the end: a failed export leaves no partial `.onnx` at the target path. A graph that fails the *gate* is
kept as `<name>.failed.onnx` (report: `<name>.failed.export.json`) when `keep_failed` is set, for inspection.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import gc
import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cellvit_trt import __version__
from cellvit_trt.errors import CellViTTRTError, CheckpointError, GateError, InputError, require
from cellvit_trt.export.settings import ExportSettings

log = logging.getLogger(__name__)

EXTERNAL_DATA_BYTES = 1_800_000_000  # protobuf's hard limit is 2 GiB; leave headroom for the graph itself


@dataclass
class ExportResult:
    path: Path
    metadata: dict[str, Any]
    summary: dict[str, Any]
    gate: Any = None  # GateReport or None
    timings: dict[str, float] = field(default_factory=dict)


def _peak_rss_mb() -> float | None:
    try:
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux
    except (ImportError, OSError):
        return None


def check_output_path(out: Path) -> None:
    """Fail early (before minutes of export) if the target cannot be written."""
    parent = out.parent if str(out.parent) else Path(".")
    if out.exists() and out.is_dir():
        raise InputError(f"output {out}: is a folder, expected an .onnx file path")
    try:
        parent.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".probe", dir=parent)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise InputError(f"output {out}: cannot write to {parent} ({exc.strerror or exc})") from exc


def load_model(checkpoint: Path):
    """(model in eval mode, ModelInfo) from a CellViT checkpoint, with the errors named."""
    from cellvit_trt.models.fileformat import check_checkpoint_file

    check_checkpoint_file(checkpoint)  # milliseconds, before the seconds of importing torch
    require("torch", "export", "export")
    from cellvit_trt.models import load_checkpoint

    try:
        model, info = load_checkpoint(checkpoint)
    except CellViTTRTError:
        raise
    except Exception as exc:  # torch.load on a foreign file raises whatever its unpickler hits
        raise CheckpointError(
            f"checkpoint {checkpoint}: not a loadable CellViT checkpoint ({type(exc).__name__}: {exc})"
        ) from exc
    return model.eval(), info


def build_metadata(
    info: Any, s: ExportSettings, outputs: list[str], summary: dict[str, Any]
) -> dict[str, Any]:
    names = list(info.nuclei_names)
    return {
        "schema": 1,
        "model": info.variant,
        "variant": info.variant,
        "arch": info.arch,
        "embed_dim": int(info.embed_dim),
        "class_names": names,
        "class_colors": [list(map(int, c)) for c in info.nuclei_colors],
        "tissue_names": list(info.tissue_names),
        "tile_size": s.tile_size,
        "overlap": s.overlap,  # total pixels shared by neighbouring tiles (upstream 64 = 2 x 32)
        "stride": s.tile_size - s.overlap,
        "target_mpp": s.target_mpp,
        "magnification": info.magnification,
        "normalization": {"mean": list(info.mean), "std": list(info.std), "scale": 255.0},
        "mean": list(info.mean),
        "std": list(info.std),
        "checkpoint_sha256": info.sha256,
        "checkpoint": Path(info.path).name if getattr(info, "path", None) else None,
        "precision": s.precision,
        "hv_dtype": s.hv_dtype,
        "tokens": s.tokens,
        "outputs": outputs,
        "opset": s.resolved_opset,
        "regression_loss": bool(info.regression_loss),
        "recipe": summary.get("recipe"),
        "package_version": __version__,
        "exported_at": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }


def _save(model: Any, path: Path, external: bool) -> None:
    import onnx

    if external:
        onnx.save_model(
            model,
            str(path),
            save_as_external_data=True,
            all_tensors_to_one_file=True,
            location=f"{path.name}.data",
            size_threshold=1024,
        )
    else:
        onnx.save_model(model, str(path))


def _trace(model: Any, info: Any, s: ExportSettings, path: Path) -> list[str]:
    import torch

    from cellvit_trt.export.wrapper import DeploymentGraph, export_patches

    hv = torch.float16 if s.hv_dtype == "float16" else torch.float32
    graph = DeploymentGraph(model, info.mean, info.std, hv_dtype=hv, tokens=s.tokens).eval()
    names = graph.output_names
    dummy = torch.full((1, s.tile_size, s.tile_size, 3), 200, dtype=torch.uint8)
    with export_patches(model, s.tile_size) as patched, torch.no_grad(), warnings_quiet():
        log.info("tracing at %d px (%s)", s.tile_size, patched)
        try:
            torch.onnx.export(
                graph,
                (dummy,),
                str(path),
                input_names=["image"],
                output_names=names,
                dynamic_axes={n: {0: "N"} for n in ["image", *names]},
                opset_version=s.resolved_opset,
                do_constant_folding=True,
                dynamo=False,
            )
        except ValueError as exc:  # the model's own input checks, e.g. a SAM tile above its pos-embed
            raise InputError(
                f"export at tile size {s.tile_size}: the model rejects this input ({exc})"
            ) from exc
    return names


@contextlib.contextmanager
def warnings_quiet():
    import warnings

    with warnings.catch_warnings():
        # the tracer's notes on shape asserts and the legacy-exporter deprecation are expected here
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", message=".*TracerWarning.*")
        warnings.filterwarnings("ignore", message="Converting a tensor to a Python")
        yield


def build_graph(model: Any, info: Any, s: ExportSettings, work: Path, plan: Any = None) -> tuple[Any, dict]:
    """The finished ONNX ModelProto (precision applied, metadata attached) and a summary."""
    import onnx
    import onnxslim

    from cellvit_trt.export import fp16 as fp16_pass
    from cellvit_trt.export import graph_passes, metadata
    from cellvit_trt.export.wrapper import FP32_SCOPES

    summary: dict[str, Any] = {}
    raw = work / "traced.onnx"
    t0 = time.perf_counter()
    outputs = _trace(model, info, s, raw)
    summary["trace_s"] = round(time.perf_counter() - t0, 2)
    onnx_model = onnx.load(str(raw))
    if s.simplify:
        onnx_model = onnxslim.slim(onnx_model)
    summary["attention_scale_rewrites"] = graph_passes.scale_before_qk(onnx_model)
    summary["hygiene"] = graph_passes.check_hygiene(onnx_model, s.tile_size)
    recipe: dict[str, Any] = {"fp32_ops": [], "fp32_scopes": []}
    if s.precision == "int8":
        fp32_path = work / "fp32.onnx"
        external = graph_passes.initializer_bytes(onnx_model) > EXTERNAL_DATA_BYTES
        _save(onnx_model, fp32_path, external)
        del onnx_model
        from cellvit_trt.export.int8 import quantize_int8

        qdq_path = work / "qdq.onnx"
        t1 = time.perf_counter()
        summary["int8"] = quantize_int8(
            fp32_path,
            qdq_path,
            plan,
            s.calibration_batch,
            s.calibration_method,
            s.calibration_percentile,
            external,
        )
        summary["calibration_s"] = round(time.perf_counter() - t1, 2)
        onnx_model = onnx.load(str(qdq_path))
    if s.precision in ("fp16", "int8"):
        fp32_ops = ["LayerNormalization"] + (["Softmax"] if s.fp32_attention_softmax else [])
        keep = fp16_pass.keep_fp32_predicate(FP32_SCOPES, fp32_ops)
        summary["fp16"] = fp16_pass.convert_to_fp16(onnx_model, keep)
        recipe = {"fp32_ops": fp32_ops, "fp32_scopes": list(FP32_SCOPES), "int8": s.precision == "int8"}
    if s.precision == "int8" or s.resolved_opset != 17:
        _set_opset(onnx_model, s.resolved_opset)
    summary["recipe"] = recipe
    onnx_model.producer_name = "cellvit-trt"
    onnx_model.producer_version = __version__
    onnx_model.doc_string = (
        f"CellViT {info.variant} deployment graph ({s.precision}), tile {s.tile_size}; "
        "see metadata_props['cellvit_trt']"
    )
    metadata.attach(onnx_model, build_metadata(info, s, outputs, summary))
    summary["ops"] = graph_passes.check_hygiene(onnx_model, s.tile_size)["ops"]
    summary["initializer_bytes"] = graph_passes.initializer_bytes(onnx_model)
    return onnx_model, summary


def _set_opset(model: Any, opset: int) -> None:
    for imp in model.opset_import:
        if imp.domain in ("", "ai.onnx"):
            imp.version = max(imp.version, opset)


def export(settings: ExportSettings, model: Any = None, info: Any = None) -> ExportResult:
    """Run the whole export. `model`/`info` may be given directly (else loaded from settings.checkpoint)."""
    require("onnx", "export", "export")
    import onnx

    s = settings
    if s.output is None:
        raise InputError("export: no output path given (--output / export.output)")
    out = Path(s.output)
    if out.suffix != ".onnx":
        raise InputError(f"output {out}: expected a file name ending in .onnx")
    if out.exists() and not s.overwrite:
        raise InputError(f"output {out}: exists (set overwrite to replace it)")
    check_output_path(out)
    timings: dict[str, float] = {}
    plan = None
    if s.precision == "int8":
        if s.calibration is None:
            raise InputError(
                "export --precision int8: needs --calibration (a folder of H&E images/tiles, or a "
                "slide or folder of slides) to calibrate activation ranges on real tissue"
            )
        from cellvit_trt.export.calibration import RECOMMENDED_TILES, plan_calibration

        if s.calibration_tiles < RECOMMENDED_TILES:
            log.warning(
                "calibration_tiles=%d is below the recommended %d", s.calibration_tiles, RECOMMENDED_TILES
            )
        plan = plan_calibration(
            s.calibration, s.calibration_tiles, s.tile_size, s.overlap, s.target_mpp, s.seed
        )
    if model is None:
        if s.checkpoint is None:
            raise InputError("export: no checkpoint given (--checkpoint / export.checkpoint)")
        t = time.perf_counter()
        model, info = load_model(Path(s.checkpoint))
        timings["load_s"] = round(time.perf_counter() - t, 2)
    elif info is None:
        raise InputError("export: `info` (ModelInfo) is required when a model object is passed")
    model.eval()
    work = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".work", dir=out.parent))
    try:
        t = time.perf_counter()
        graph, summary = build_graph(model, info, s, work, plan)
        timings["build_s"] = round(time.perf_counter() - t, 2)
        external = s.external_data == "always" or (
            s.external_data == "auto" and summary["initializer_bytes"] > EXTERNAL_DATA_BYTES
        )
        staged = work / out.name
        _save(graph, staged, external)
        meta = _meta_of(graph)
        del graph
        onnx.checker.check_model(str(staged), full_check=True)
        summary["external_data"] = external
        summary["size_bytes"] = staged.stat().st_size + (
            (work / f"{out.name}.data").stat().st_size if external else 0
        )
        report = None
        if s.gate:
            t = time.perf_counter()
            report = gate_graph(model, info, staged, s)
            timings["gate_s"] = round(time.perf_counter() - t, 2)
        timings["peak_rss_mb"] = _peak_rss_mb()
        result = ExportResult(out, meta, summary, report, timings)
        if report is not None and not report.passed:
            failed = out.with_name(out.name[: -len(".onnx")] + ".failed.onnx")
            if s.keep_failed:
                _move_graph(staged, failed, external)
                _write_report(failed, s, result)
            where = (
                f"; the graph is kept as {failed} for inspection"
                if s.keep_failed
                else "; nothing was written"
            )
            raise GateError(
                f"export of {s.checkpoint or info.variant} ({s.precision}) failed the parity gate"
                f"{where}:\n{report.format()}"
            )
        _move_graph(staged, out, external)
        _write_report(out, s, result)
        return result
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _meta_of(graph: Any) -> dict[str, Any]:
    from cellvit_trt.export.metadata import from_model

    return from_model(graph)


def _move_graph(staged: Path, target: Path, external: bool) -> None:
    """Move a staged graph (and its external data) to `target`; the .onnx is replaced last."""
    if external:
        import onnx

        if (
            staged.name != target.name
        ):  # the data file name is recorded in the graph: re-save under the new name
            model = onnx.load(str(staged))
            _save(model, staged.with_name(target.name), True)
            staged = staged.with_name(target.name)
        os.replace(staged.with_name(f"{staged.name}.data"), target.with_name(f"{target.name}.data"))
    os.replace(staged, target)


def _write_report(graph_path: Path, s: ExportSettings, result: ExportResult) -> None:
    from cellvit_trt.config import to_dict
    from cellvit_trt.io import write_json

    path = graph_path.with_name(graph_path.name[: -len(".onnx")] + ".export.json")
    write_json(
        path,
        {
            "graph": graph_path.name,
            "settings": to_dict(s),
            "metadata": result.metadata,
            "summary": result.summary,
            "timings": result.timings,
            "gate": result.gate.to_dict() if result.gate is not None else None,
        },
    )


def reference_runner(model: Any, info: Any, tokens: bool):
    """The PyTorch FP32 reference as a runner: same wrapper, eager, HV in float32."""
    import numpy as np
    import torch

    from cellvit_trt.export.wrapper import DeploymentGraph

    graph = DeploymentGraph(model, info.mean, info.std, hv_dtype=torch.float32, tokens=tokens).eval()

    def infer(images: np.ndarray) -> dict[str, np.ndarray]:
        with torch.no_grad():
            outs = graph(torch.from_numpy(np.ascontiguousarray(images)))
        return {k: v.numpy() for k, v in zip(graph.output_names, outs, strict=True)}

    return infer


def gate_graph(model: Any, info: Any, graph_path: Path, s: ExportSettings):
    """Run the parity gate of the graph at `graph_path` (ONNX Runtime, CPU) against the PyTorch FP32 model."""
    from cellvit_trt.export.gate import collect, load_thresholds, run_gate
    from cellvit_trt.export.samples import gate_tiles, sized_gate_tiles
    from cellvit_trt.runtime.backends.onnxrt import OnnxRuntimeBackend

    thresholds = load_thresholds(s.precision)
    if s.gate_tiles is None:  # enough tiles and nuclei for the intervals to decide (export/samples.py)
        tiles, _ = sized_gate_tiles(thresholds, s.tile_size, seed=s.seed or 0, mpp=s.target_mpp)
    else:
        tiles = gate_tiles(s.gate_tiles, s.tile_size, seed=s.seed or 0, mpp=s.target_mpp)
        if s.gate_tiles < thresholds.recommended_tiles:
            log.warning(
                "--gate-tiles %d is below the %d recommended for a %s gate: its intervals are wide",
                s.gate_tiles,
                thresholds.recommended_tiles,
                s.precision,
            )
    # reference first, before the ONNX Runtime session exists: peak = the larger of the two, not their sum
    reference = collect(reference_runner(model, info, s.tokens), tiles, s.gate_batch)
    gc.collect()
    with OnnxRuntimeBackend(graph_path, providers="cpu", batch=s.gate_batch) as backend:
        return run_gate(
            None,
            backend,
            tiles,
            s.precision,
            batch=s.gate_batch,
            magnification=info.magnification,
            class_names=list(info.nuclei_names),
            reference_outputs=reference,
            thresholds=thresholds,
        )
