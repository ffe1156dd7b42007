"""Int8 coverage: which share of the model's MACs ONNX Runtime really runs in integer kernels.

A QDQ layout that ORT does not fuse runs DQ -> float op -> Q, slower than float. So hewn asks
ORT: it builds a session with graph optimizations on, saves the optimized graph, and finds
which weighted ops became QLinearConv / QGemm / MatMulInteger / DynamicQuantizeMatMul / ...
Each MAC-carrying node of the QDQ graph is traced to the optimized graph by its weight
initializer (the int8 tensor survives ORT's fusions under its name).
"""
from __future__ import annotations

import tempfile
from pathlib import Path

import onnx
import onnx_graphsurgeon as gs

from hewn.core.ir import to_model
from hewn.core.runtime import make_session

from hewn.passes.analysis.cost_model import macs_by_node

INTEGER_OPS = ("QLinearConv", "QGemm", "QLinearMatMul", "MatMulInteger", "MatMulIntegerToFloat",
               "DynamicQuantizeMatMul", "ConvInteger", "QAttention", "NhwcQLinearConv")
FLOAT_WEIGHTED = ("Conv", "Gemm", "MatMul", "FusedConv", "FusedGemm", "FusedMatMul", "ConvTranspose")


def int8_coverage(graph: gs.Graph, ctx, providers=("CPUExecutionProvider",)) -> dict:
    """{"coverage": share of MACs in integer kernels, "integer_macs", "total_macs", "ort_ops": op counts
    of the optimized graph, "float_nodes": the largest MAC nodes left in float}. Measured on the graph as
    it is now: its cached analyses are dropped first (quantization just rewrote it)."""
    ctx.invalidate(graph=graph)
    macs = macs_by_node(graph, ctx)
    with tempfile.TemporaryDirectory(prefix="hewn-ort-") as tmp:
        path = str(Path(tmp) / "optimized.onnx")
        make_session(to_model(graph.copy(), ir_version=ctx.ir_version), providers=providers, optimized_path=path)
        optimized = onnx.load(path, load_external_data=False)
    integer_inputs, ops = set(), {}
    for node in optimized.graph.node:
        ops[node.op_type] = ops.get(node.op_type, 0) + 1
        if node.op_type in INTEGER_OPS:
            integer_inputs.update(node.input)
    total = sum(count for _, count in macs)
    covered, in_float = 0, []
    for node, count in macs:
        if _weight_name(node) in integer_inputs:
            covered += count
        elif count:
            in_float.append({"node": node.name, "op": node.op, "macs": count})
    in_float.sort(key=lambda d: -d["macs"])
    return {"coverage": covered / total if total else 0.0, "integer_macs": covered, "total_macs": total,
            "ort_ops": dict(sorted(ops.items())), "float_nodes": in_float[:20]}


def _weight_name(node: gs.Node) -> str:
    """The tensor an integer kernel made from `node` reads as its weight: the quantized tensor
    behind a DequantizeLinear (int8 initializer, or a Q output for activation x activation), or
    for dynamic MatMulInteger its constant input."""
    if len(node.inputs) < 2:
        return ""
    w = node.inputs[1]
    if w.inputs and w.inputs[0].op == "DequantizeLinear":
        w = w.inputs[0].inputs[0]
    return w.name
