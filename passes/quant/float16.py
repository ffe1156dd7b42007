"""Float16: run what stays float in half precision (tensor cores), keeping the ops that lose
accuracy in fp16 (normalizations, Softmax, reductions, exponentials) and every op next to a
Q/DQ pair in fp32, so the int8 islands TensorRT fuses are not broken up by Casts.

Graph inputs and outputs keep their fp32 types, so callers feed the same arrays. Each tensor
that crosses between the fp16 and the fp32 part gets one Cast, shared by all its readers;
weights read in fp16 are stored in fp16 (clipped to its range), halving the file.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from hewn.core.ir import to_model
from hewn.core.pass_infra import Pass, PassResult
from hewn.core.runtime import make_session, run

from hewn.core.graph_utils import name_nodes
from hewn.passes.analysis.shape_inference import ShapeInfo

QDQ = ("QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear")
# fp16's 10-bit mantissa and 65504 maximum: sums of squares, exponentials and variances overflow
# or lose too much in these (TensorRT's and Model Optimizer's defaults keep them fp32 as well).
PRECISION_SENSITIVE = ("LayerNormalization", "SkipLayerNormalization", "SimplifiedLayerNormalization",
                       "BatchNormalization", "InstanceNormalization", "GroupNormalization", "Softmax",
                       "LogSoftmax", "ReduceMean", "ReduceSum", "ReduceL2", "ReduceSumSquare", "ReduceLogSumExp",
                       "ReduceProd", "Pow", "Exp", "Log", "Sqrt", "Reciprocal", "Div", "Erf")
# Ops whose output type is an attribute, or that are random / shape-only: never converted.
NEVER = ("Cast", "ConstantOfShape", "Constant", "RandomNormal", "RandomUniform", "EyeLike", "Range", "TopK",
         "NonMaxSuppression", "RoiAlign", "CumSum", "Loop", "If", "Scan")  # subgraph ops: their bodies are typed
# Inputs that the spec fixes to float32 whatever the op runs in.
FLOAT32_INPUTS = {"Resize": (1, 2), "Upsample": (1,)}
# Type-agnostic readers: they take any tensor as it is.
ANY_TYPE = ("Shape", "Size")
F16_MAX = 65504.0
SENTINEL = 1e9  # constants this large (or infinite) stand for infinity: attention masks, clamp limits
F32 = np.dtype(np.float32)


class Float16(Pass):
    name = "float16"
    lossless = False

    @dataclass(frozen=True)
    class Config:
        keep_ops: tuple[str, ...] = PRECISION_SENSITIVE  # op types kept in fp32
        keep_nodes: tuple[str, ...] = ()                 # node names kept in fp32

    def budget(self, ctx) -> Optional[float]:
        """The target's stated cost of its fp16 remainder (cuda: 1 - cosine <= 1e-3)."""
        return ctx.target.stated_budget or None

    def run(self, graph: gs.Graph, ctx) -> PassResult:
        info = ctx.analysis(ShapeInfo, graph)
        dtype = lambda t: np.dtype(t.dtype) if isinstance(t, gs.Constant) else info.dtype(t.name)  # noqa: E731
        if any(dtype(t) == np.float16 for t in graph.tensors().values()):
            ctx.note(self.name, "model", "the model already holds float16 tensors; left as it is")
            return PassResult(False, {"already_float16": True})
        name_nodes(graph)  # the fp16 set is kept by name
        next_to_qdq = _next_to_qdq(graph)
        floats = [n for n in graph.nodes if n.op not in QDQ and n.op not in ANY_TYPE
                  and any(t.name and dtype(t) == F32 for t in [*n.inputs, *n.outputs])]
        opset = graph.opset  # the default domain's: the schemas below say which types each op takes
        half = [n for n in floats if n.op not in self.config.keep_ops and n.op not in NEVER
                and n.name not in self.config.keep_nodes and n.name not in next_to_qdq
                and n.domain in ("", "ai.onnx", None) and _outputs_take_fp16(n, opset, dtype)
                and all(t.name == "" or dtype(t) is not None for t in [*n.inputs, *n.outputs])]
        out_of_range = _out_of_range(graph, ctx, half, dtype)
        for node, why in out_of_range.items():
            ctx.note(self.name, node, f"kept in fp32: {why}")
        half = [n for n in half if n.name not in out_of_range]
        if not half:
            return PassResult(False, {"fp16_nodes": 0, "reason": "every float node is precision-sensitive, int8, or out of fp16 range"})
        casts, weights = _convert(graph, {n.name for n in half}, dtype, ctx, self.name, opset)
        graph.cleanup().toposort()
        return PassResult(True, {"fp16_nodes": len(half), "fp32_nodes": len(floats) - len(half), "casts_added": casts,
                                 "weights_fp16": weights,
                                 "fp32_because_int8_neighbour": len([n for n in floats if n.name in next_to_qdq]),
                                 "fp32_because_of_range": len(out_of_range)})


def _formal_types(node: gs.Node, opset) -> Optional[tuple[list[set], list[set]]]:
    """(allowed types of each input, of each output) from the op's schema; None if unknown."""
    try:
        schema = onnx.defs.get_schema(node.op, opset or onnx.defs.onnx_opset_version(), "")
    except onnx.defs.SchemaError:
        return None
    constraints = {c.type_param_str: set(c.allowed_type_strs) for c in schema.type_constraints}

    def types(params, count):
        if not params:
            return [set()] * count
        sets = [constraints.get(p.type_str, {p.type_str}) for p in params]
        return [sets[min(i, len(sets) - 1)] for i in range(count)]  # variadic: the last repeats
    return types(schema.inputs, len(node.inputs)), types(schema.outputs, len(node.outputs))


def _outputs_take_fp16(node: gs.Node, opset, dtype) -> bool:
    formal = _formal_types(node, opset)
    return formal is not None and all(dtype(y) != F32 or "tensor(float16)" in allowed
                                      for y, allowed in zip(node.outputs, formal[1]))


def _fixed_inputs(node: gs.Node, opset) -> set[int]:
    """Inputs whose type the op's schema fixes (QLinearConv's scales, Resize's scales): stay fp32."""
    formal = _formal_types(node, opset)
    if formal is None:
        return set(range(len(node.inputs)))
    return {i for i, allowed in enumerate(formal[0]) if "tensor(float16)" not in allowed}


def _convert(graph: gs.Graph, half: set[str], dtype, ctx, pass_name: str, opset=None) -> tuple[int, int]:
    """Retype the fp16 nodes' float tensors; one Cast per tensor that crosses the boundary."""
    casts: dict[tuple[str, str], gs.Variable] = {}
    halved: dict[str, gs.Constant] = {}
    count = [0]

    def cast(t: gs.Tensor, to: str) -> gs.Variable:
        key = (t.name, to)
        if key not in casts:
            out = gs.Variable(ctx.names.make(pass_name, t.name, f"to_{to}"),
                              dtype=np.float16 if to == "fp16" else np.float32, shape=t.shape)
            target = onnx.TensorProto.FLOAT16 if to == "fp16" else onnx.TensorProto.FLOAT
            graph.nodes.append(gs.Node("Cast", ctx.names.make(pass_name, t.name, "Cast"), attrs={"to": target},
                                       inputs=[t], outputs=[out]))
            casts[key] = out
            count[0] += 1
        return casts[key]

    outputs = {t.name for t in graph.outputs}
    for node in [n for n in graph.nodes if n.name in half]:
        fixed = set(FLOAT32_INPUTS.get(node.op, ())) | _fixed_inputs(node, opset)
        for i, t in enumerate(node.inputs):
            if not t.name or i in fixed or dtype(t) != F32:
                continue
            if isinstance(t, gs.Constant):
                if t.name not in halved:
                    values = np.asarray(np.clip(t.values, -F16_MAX, F16_MAX), dtype=np.float16)
                    halved[t.name] = gs.Constant(ctx.names.make(pass_name, t.name, "fp16"), values)
                node.inputs[i] = halved[t.name]
            elif not (t.inputs and t.inputs[0].name in half):
                node.inputs[i] = cast(t, "fp16")
        for j, y in enumerate(node.outputs):
            if dtype(y) != F32:
                continue
            readers = [r for r in y.outputs if r.name not in half and r.op not in ANY_TYPE]
            if y.name in outputs or readers:
                inner = gs.Variable(ctx.names.make(pass_name, y.name, "fp16"), dtype=np.float16, shape=y.shape)
                for r in [r for r in y.outputs if r.name in half]:
                    r.inputs[r.inputs.index(y)] = inner
                node.outputs[j] = inner
                y.inputs.clear()
                graph.nodes.append(gs.Node("Cast", ctx.names.make(pass_name, y.name, "Cast"),
                                           attrs={"to": onnx.TensorProto.FLOAT}, inputs=[inner], outputs=[y]))
                count[0] += 1
            else:
                y.dtype = np.float16
    return count[0], len(halved)


def _out_of_range(graph: gs.Graph, ctx, nodes: list, dtype) -> dict[str, str]:
    """Nodes that fp16 cannot represent: a weight that fp16 clips or rounds by more than 1% (relative
    L2), or a tensor they read or write that reaches half of fp16's range on the reference inputs
    (headroom: what overflows on the GPU computes silently in fp32 on the CPU)."""
    why: dict[str, str] = {}
    for node in nodes:
        for t in node.inputs:
            if isinstance(t, gs.Constant) and dtype(t) == F32 and t.values.size:
                w = np.asarray(t.values, np.float64)
                w = w[np.abs(w) < SENTINEL]  # -inf / -1e9 / finfo.min masks: fp16's max serves as well
                err = np.linalg.norm(np.clip(w, -F16_MAX, F16_MAX).astype(np.float16) - w) / (np.linalg.norm(w) or 1)
                if err > 0.01:
                    why[node.name] = f"fp16 changes its weight '{t.name}' by {err:.1%}"
    peaks = _activation_peaks(graph, ctx, [n for n in nodes if n.name not in why], dtype)
    for node in nodes:
        for t in [*node.inputs, *node.outputs]:
            if node.name not in why and peaks.get(t.name, 0.0) > F16_MAX / 2:
                why[node.name] = f"tensor '{t.name}' reaches {peaks[t.name]:.3g} on the reference inputs (fp16 max 65504)"
    return why


def _activation_peaks(graph: gs.Graph, ctx, nodes: list, dtype) -> dict[str, float]:
    """max |value| of the fp32 tensors `nodes` read or write, over the reference inputs."""
    if ctx.reference is None:
        return {}
    names = list(dict.fromkeys(t.name for n in nodes for t in [*n.inputs, *n.outputs]
                               if t.name and not isinstance(t, gs.Constant) and dtype(t) == F32))
    if not names:
        return {}
    probe = graph.copy()
    tensors = probe.tensors()
    for name in names:
        tensors[name].dtype = np.float32
    probe.outputs = [tensors[name] for name in names]
    session = make_session(to_model(probe, ir_version=ctx.ir_version), optimize=False)
    peaks: dict[str, float] = {}
    for feeds in ctx.reference.feeds:
        for name, value in zip(names, run(session, names, feeds)):
            finite = np.abs(value[np.isfinite(value)]) if value.size else value
            peaks[name] = max(peaks.get(name, 0.0), float(finite.max()) if finite.size else 0.0)
    return peaks


def _next_to_qdq(graph: gs.Graph) -> set[str]:
    """Nodes that read a DequantizeLinear output or feed a QuantizeLinear: they run in int8."""
    names = set()
    for node in graph.nodes:
        if node.op == "DequantizeLinear":
            names.update(reader.name for reader in node.outputs[0].outputs)
        elif node.op == "QuantizeLinear" and node.inputs[0].inputs:
            names.add(node.inputs[0].inputs[0].name)
    return names
