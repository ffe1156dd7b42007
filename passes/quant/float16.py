"""Float16: run what stays float in half precision (tensor cores), keeping the ops that lose
accuracy in fp16 (normalizations, Softmax, reductions, exponentials) and every op next to a
Q/DQ pair in fp32, so the int8 islands TensorRT fuses are not broken up by Casts.

Graph inputs and outputs keep their fp32 types, so callers feed the same arrays. Each tensor
that crosses between the fp16 and the fp32 part gets one Cast, shared by all its readers;
weights read in fp16 are stored in fp16 (clipped to its range), halving the file.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from hewn.core.pass_infra import Pass, PassResult

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
         "NonMaxSuppression", "RoiAlign", "CumSum")
# Inputs that the spec fixes to float32 whatever the op runs in.
FLOAT32_INPUTS = {"Resize": (1, 2), "Upsample": (1,)}
# Type-agnostic readers: they take any tensor as it is.
ANY_TYPE = ("Shape", "Size")
F16_MAX = 65504.0
F32 = np.dtype(np.float32)


class Float16(Pass):
    name = "float16"
    lossless = False

    @dataclass(frozen=True)
    class Config:
        keep_ops: tuple[str, ...] = PRECISION_SENSITIVE  # op types kept in fp32
        keep_nodes: tuple[str, ...] = ()                 # node names kept in fp32

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
        half = [n for n in floats if n.op not in self.config.keep_ops and n.op not in NEVER
                and n.name not in self.config.keep_nodes and n.name not in next_to_qdq
                and n.domain in ("", "ai.onnx", None)
                and all(t.name == "" or dtype(t) is not None for t in [*n.inputs, *n.outputs])]
        if not half:
            return PassResult(False, {"fp16_nodes": 0, "reason": "every float node is precision-sensitive or int8"})
        casts, weights = _convert(graph, {n.name for n in half}, dtype, ctx, self.name)
        graph.cleanup().toposort()
        return PassResult(True, {"fp16_nodes": len(half), "fp32_nodes": len(floats) - len(half), "casts_added": casts,
                                 "weights_fp16": weights,
                                 "fp32_because_int8_neighbour": len([n for n in floats if n.name in next_to_qdq])})


def _convert(graph: gs.Graph, half: set[str], dtype, ctx, pass_name: str) -> tuple[int, int]:
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
        fixed = FLOAT32_INPUTS.get(node.op, ())
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


def _next_to_qdq(graph: gs.Graph) -> set[str]:
    """Nodes that read a DequantizeLinear output or feed a QuantizeLinear: they run in int8."""
    names = set()
    for node in graph.nodes:
        if node.op == "DequantizeLinear":
            names.update(reader.name for reader in node.outputs[0].outputs)
        elif node.op == "QuantizeLinear" and node.inputs[0].inputs:
            names.add(node.inputs[0].inputs[0].name)
    return names
