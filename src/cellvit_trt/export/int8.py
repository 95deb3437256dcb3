"""INT8 recipe: explicit Q/DQ from calibration on real tiles, with ONNX Runtime's static QDQ quantiser.

Placement follows what TensorRT fuses (tensorrt.md §12-13; ModelOpt's default INT8 placement):
- quantised: the inputs and weights of Conv, ConvTranspose and of weight MatMul/Gemm (QKV, attention
  projection, MLP, patch embedding, decoder convs);
- not quantised: the attention core (activation x activation MatMuls and their Softmax: TensorRT's fused MHA
  runs it in FP16), LayerNorm, the last layer before every output (1x1 head convs, tissue head), whose
  error lands directly in the decisions, and the full-resolution skip convs on the image (`decoder0`);
- symmetric signed INT8 (zero points 0, TensorRT rejects others), per-channel weights, no bias quantisation,
  standard ONNX Q/DQ ops (no com.microsoft domain).
The non-quantised rest is then converted to FP16 by `fp16.convert_to_fp16` (Q/DQ scales in FP16, opset >= 19),
so a strongly typed TensorRT build gets INT8 GEMMs/convs in an FP16 network.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx

from cellvit_trt.errors import require
from cellvit_trt.export.calibration import CalibrationPlan

log = logging.getLogger(__name__)

WEIGHT_OPS = ("Conv", "ConvTranspose", "MatMul", "Gemm")
# The full-resolution skip path on the image itself (CellViT's `decoder0`): its error lands unfiltered in the
# full-resolution heads. Keeping it FP16 measurably helps (demo model, docs/export.md) and costs little: two
# small convs next to the 100+ quantised layers.
FULL_RES_SKIP_SCOPES = ("/decoder0/",)


def _output_layers(graph: onnx.GraphProto) -> set[str]:
    """The last Conv/MatMul/Gemm on the way to each graph output (walking producers backwards)."""
    producer = {o: n for n in graph.node for o in n.output}
    found: set[str] = set()
    for out in graph.output:
        stack, seen = [out.name], set()
        while stack:
            name = stack.pop()
            node = producer.get(name)
            if node is None or node.name in seen:
                continue
            seen.add(node.name)
            if node.op_type in WEIGHT_OPS:
                found.add(node.name)
                continue
            stack.extend(i for i in node.input if i)
    return found


def select_nodes(model: onnx.ModelProto) -> tuple[list[str], dict[str, int]]:
    """Names of the nodes to quantise, and counts of what was left out and why."""
    graph = model.graph
    inits = {t.name for t in graph.initializer}
    heads = _output_layers(graph)
    chosen, skipped = [], {"attention_matmul": 0, "output_layer": 0, "full_res_skip": 0}
    for node in graph.node:
        if node.op_type not in WEIGHT_OPS:
            continue
        if node.name in heads:
            skipped["output_layer"] += 1
            continue
        if any(scope in node.name for scope in FULL_RES_SKIP_SCOPES):
            skipped["full_res_skip"] += 1
            continue
        if node.op_type in ("MatMul", "Gemm") and not any(i in inits for i in node.input[:2]):
            skipped["attention_matmul"] += 1  # q·kᵀ and attn·v: both operands are activations
            continue
        chosen.append(node.name)
    return chosen, skipped


class _Reader:
    """ORT CalibrationDataReader over a CalibrationPlan, one batch per item, read when asked. With
    `CalibStridedMinMax` = 1 ORT collects and merges one batch at a time: the MinMax calibrator keeps only
    per-channel minima/maxima between batches, so memory does not grow with the number of tiles (the
    histogram calibrators, percentile and entropy, pull every calibrated activation of a batch into Python
    for their histograms: more memory per batch, still one batch at a time)."""

    def __init__(self, plan: CalibrationPlan, batch: int):
        self.plan, self.batch = plan, batch
        self.n_batches = (len(plan) + batch - 1) // batch
        self.set_range(0, self.n_batches)

    def __len__(self) -> int:
        return self.n_batches

    def set_range(self, start_index: int, end_index: int) -> None:
        self._next, self._end = start_index, min(end_index, self.n_batches)

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self._next >= self._end:
            return None
        i = self._next
        self._next += 1
        lo, hi = i * self.batch, min(len(self.plan), (i + 1) * self.batch)
        log.info("calibration batch %d/%d", i + 1, self.n_batches)
        return {"image": self.plan.read(lo, hi)}

    def __iter__(self):
        while (item := self.get_next()) is not None:
            yield item


@contextlib.contextmanager
def bounded_calibration_session() -> Iterator[None]:
    """Let ORT's calibrator run its augmented graph under the runtime's memory-bounded session options.

    ORT builds the calibration session itself (`CalibraterBase.create_inference_session`, no hook to pass
    session options): default memory pattern and arena, and the default execution order, which runs the
    per-tensor ReduceMin/ReduceMax nodes only after the whole network (depth-first from the graph outputs,
    the model's own outputs first), so every calibrated activation of a tile stays alive until then. The
    priority-based order runs them in the graph's node order, right where ORT inserted them. Measured on
    the demo model at 1024 px: 6.6 GB for one tile (the second tile adds the memory pattern's copy), 0.63 GB
    with these options. The ranges are the same (same ops, no graph optimisation, as ORT does;
    tests/export/test_calibration_memory.py compares the scales). Where a future ORT no longer has that
    method, calibration runs with ORT's own options and a warning.
    """
    import onnxruntime as ort
    from onnxruntime.quantization import calibrate

    from cellvit_trt.runtime.backends.onnxrt import bounded_memory

    base = getattr(calibrate, "CalibraterBase", None)
    original = getattr(base, "create_inference_session", None)
    if original is None:
        log.warning(
            "ONNX Runtime's calibrator has no create_inference_session: calibrating with its defaults"
        )
        yield
        return

    def create_inference_session(self) -> None:
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # as ORT's own
        bounded_memory(ort, opts)
        opts.execution_order = ort.ExecutionOrder.PRIORITY_BASED
        providers = getattr(self, "execution_providers", None) or ["CPUExecutionProvider"]
        self.infer_session = ort.InferenceSession(
            self.augmented_model_path, sess_options=opts, providers=providers
        )

    base.create_inference_session = create_inference_session
    try:
        yield
    finally:
        base.create_inference_session = original


def quantize_int8(
    fp32_path: Path,
    out_path: Path,
    plan: CalibrationPlan,
    batch: int,
    method: str,
    percentile: float,
    external_data: bool,
) -> dict[str, object]:
    """Write the Q/DQ graph of `fp32_path` (FP32 elsewhere) to `out_path`; return a summary."""
    require("onnxruntime", "export", "INT8 calibration")
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    model = onnx.load(str(fp32_path), load_external_data=False)
    nodes, skipped = select_nodes(model)
    del model
    reader = _Reader(plan, batch)
    CalibrationDataReader.register(_Reader)
    methods = {
        "minmax": CalibrationMethod.MinMax,
        "percentile": CalibrationMethod.Percentile,
        "entropy": CalibrationMethod.Entropy,
    }
    extra = {
        "ActivationSymmetric": True,
        "WeightSymmetric": True,
        "QuantizeBias": False,
        "UseQDQContribOps": False,
        "QDQOpTypePerChannelSupportToAxis": {"MatMul": 1},
        "CalibTensorRangeSymmetric": True,
        "CalibStridedMinMax": 1,
        "CalibPercentile": float(percentile),
    }
    with bounded_calibration_session():
        quantize_static(
            str(fp32_path),
            str(out_path),
            reader,
            quant_format=QuantFormat.QDQ,
            op_types_to_quantize=list(WEIGHT_OPS),
            nodes_to_quantize=nodes,
            per_channel=True,
            reduce_range=False,
            activation_type=QuantType.QInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=methods[method],
            use_external_data_format=external_data,
            extra_options=extra,
        )
    return {
        "quantized_nodes": len(nodes),
        "excluded": skipped,
        "calibration_tiles": len(plan),
        "calibration_method": method,
        "percentile": percentile if method == "percentile" else None,
    }
