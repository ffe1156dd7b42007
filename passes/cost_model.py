"""CostModel analysis: parameters, multiply-accumulates per node, activation bytes.

Symbolic dimensions (batch, sequence) count as 1, so MACs are per unit of each symbolic dim.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import onnx_graphsurgeon as gs

from compiler.pass_infra import Analysis

from .graph_utils import const_value
from .shape_inference import ShapeInfo


def _dims(shape) -> list[int] | None:
    if shape is None:
        return None
    return [d if isinstance(d, (int, np.integer)) and d > 0 else 1 for d in shape]


def _prod(dims) -> int:
    return int(np.prod(dims, dtype=np.int64)) if dims is not None else 0


def _conv_macs(node, shape_of) -> int:
    w, out = shape_of(node.inputs[1]), shape_of(node.outputs[0])
    return _prod(out) * _prod(w[1:]) if w and out else 0


def _conv_transpose_macs(node, shape_of) -> int:
    x, w = shape_of(node.inputs[0]), shape_of(node.inputs[1])
    return _prod(x) * _prod(w[1:]) if x and w else 0


def _gemm_macs(node, shape_of) -> int:
    a, out = shape_of(node.inputs[0]), shape_of(node.outputs[0])
    if not a or not out or len(a) != 2:
        return 0
    k = a[0] if node.attrs.get("transA", 0) else a[1]
    return _prod(out) * k


def _matmul_macs(node, shape_of) -> int:
    a, out = shape_of(node.inputs[0]), shape_of(node.outputs[0])
    return _prod(out) * a[-1] if a and out is not None else 0


MAC_RULES = {
    "Conv": _conv_macs,
    "ConvInteger": _conv_macs,
    "QLinearConv": lambda n, s: _prod(s(n.outputs[0])) * _prod((s(n.inputs[3]) or [0])[1:]),
    "ConvTranspose": _conv_transpose_macs,
    "Gemm": _gemm_macs,
    "MatMul": _matmul_macs,
    "MatMulInteger": _matmul_macs,
}


def macs_by_node(graph: gs.Graph, ctx) -> list[tuple[gs.Node, int]]:
    """(node, MACs) for every MAC-carrying node, in graph order (names may repeat in exported graphs)."""
    info = ctx.analysis(ShapeInfo, graph)

    def shape_of(tensor):
        value = const_value(tensor)
        return list(value.shape) if value is not None else _dims(info.shape(tensor.name))

    return [(node, int(MAC_RULES[node.op](node, shape_of))) for node in graph.nodes if node.op in MAC_RULES]


@dataclass
class CostModel(Analysis):
    node_macs: dict[str, int]
    total_macs: int
    params: int
    param_bytes: int
    activation_bytes: int
    nodes: int
    op_counts: dict[str, int] = field(default_factory=dict)

    @classmethod
    def compute(cls, graph: gs.Graph, ctx) -> "CostModel":
        info = ctx.analysis(ShapeInfo, graph)
        node_macs = {}
        for i, (node, macs) in enumerate(macs_by_node(graph, ctx)):
            node_macs[node.name or f"{node.op}_{i}"] = macs
        params = param_bytes = activation_bytes = 0
        for tensor in graph.tensors().values():
            if isinstance(tensor, gs.Constant):
                params += int(tensor.values.size)
                param_bytes += int(tensor.values.nbytes)
            else:
                dims, dtype = _dims(info.shape(tensor.name)), info.dtype(tensor.name)
                if dims is not None and dtype is not None:
                    activation_bytes += _prod(dims) * np.dtype(dtype).itemsize
        ops = Counter(node.op for node in graph.nodes)
        return cls(node_macs, sum(node_macs.values()), params, param_bytes, activation_bytes,
                   len(graph.nodes), dict(sorted(ops.items())))

    def summary(self) -> dict:
        return {"nodes": self.nodes, "params": self.params, "param_bytes": self.param_bytes,
                "macs": self.total_macs, "activation_bytes": self.activation_bytes, "ops": self.op_counts}
