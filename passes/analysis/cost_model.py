"""CostModel analysis: parameters, multiply-accumulates per node (the MAC model in macs.py),
activation bytes. Symbolic dimensions (batch, sequence) count as 1.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import onnx_graphsurgeon as gs

from hewn.core.pass_infra import Analysis

from hewn.core.graph_utils import const_value
from hewn.passes.analysis.macs import RULES, dims, op_macs, prod
from hewn.passes.analysis.shape_inference import ShapeInfo


def macs_by_node(graph: gs.Graph, ctx) -> list[tuple[gs.Node, int]]:
    """(node, MACs) for every MAC-carrying node, in graph order (names may repeat in exported graphs)."""
    info = ctx.analysis(ShapeInfo, graph)

    def shape_of(tensor):
        if tensor is None or not tensor.name:
            return None
        value = const_value(tensor)
        return list(value.shape) if value is not None else info.shape(tensor.name)

    return [(node, op_macs(node.op, [shape_of(t) for t in node.inputs], [shape_of(t) for t in node.outputs],
                           node.attrs))
            for node in graph.nodes if node.op in RULES]


def _unknown(dim, named: set) -> bool:
    """A dim shape inference could not know: None, or a name that is none of the inputs' dims (the
    unk__N it invents, an exporter's 'Conv_output_dim_2')."""
    return dim is None or (isinstance(dim, str) and dim not in named)


@dataclass
class CostModel(Analysis):
    node_macs: dict[str, int]
    total_macs: int
    params: int
    param_bytes: int
    activation_bytes: int
    nodes: int
    op_counts: dict[str, int] = field(default_factory=dict)
    unknown_shapes: int = 0          # MAC nodes whose output shape inference could not fully know


    @classmethod
    def compute(cls, graph: gs.Graph, ctx) -> "CostModel":
        info = ctx.analysis(ShapeInfo, graph)
        node_macs, unknown = {}, 0
        named = {d for t in graph.inputs for d in (t.shape or ()) if isinstance(d, str)}
        for i, (node, macs) in enumerate(macs_by_node(graph, ctx)):
            node_macs[node.name or f"{node.op}_{i}"] = macs
            unknown += any(_unknown(d, named) for d in info.shape(node.outputs[0].name) or (None,))
        params = param_bytes = activation_bytes = 0
        for tensor in graph.tensors().values():
            value = const_value(tensor)   # initializers and Constant-node values are both weights
            if value is not None:
                params += int(value.size)
                param_bytes += int(value.nbytes)
            else:
                shape, dtype = dims(info.shape(tensor.name)), info.dtype(tensor.name)
                if shape is not None and dtype is not None:
                    activation_bytes += prod(shape) * np.dtype(dtype).itemsize
        ops = Counter(node.op for node in graph.nodes)
        return cls(node_macs, sum(node_macs.values()), params, param_bytes, activation_bytes,
                   len(graph.nodes), dict(sorted(ops.items())), unknown)

    def summary(self) -> dict:
        return {"nodes": self.nodes, "params": self.params, "param_bytes": self.param_bytes,
                "macs": self.total_macs, "activation_bytes": self.activation_bytes, "ops": self.op_counts}
