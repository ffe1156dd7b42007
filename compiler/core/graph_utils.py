"""Small helpers every rewrite pass uses on onnx-graphsurgeon graphs."""
from __future__ import annotations

from typing import Optional

import numpy as np
import onnx_graphsurgeon as gs


def const_value(tensor: gs.Tensor) -> Optional[np.ndarray]:
    """The value of a Constant tensor, or of a Variable produced by an ONNX `Constant` node; else None."""
    if isinstance(tensor, gs.Constant):
        return np.asarray(tensor.values)
    if len(tensor.inputs) == 1 and tensor.inputs[0].op == "Constant":
        attrs = tensor.inputs[0].attrs
        if isinstance(attrs.get("value"), gs.Constant):
            return np.asarray(attrs["value"].values)
    return None


def is_graph_output(graph: gs.Graph, tensor: gs.Tensor) -> bool:
    return any(out is tensor for out in graph.outputs)


def is_graph_input(graph: gs.Graph, tensor: gs.Tensor) -> bool:
    return any(inp is tensor for inp in graph.inputs)


def sole_consumer(graph: gs.Graph, tensor: gs.Tensor) -> Optional[gs.Node]:
    """The one node reading `tensor`, if it is read by exactly one node and is no graph output."""
    if len(tensor.outputs) != 1 or is_graph_output(graph, tensor):
        return None
    return tensor.outputs[0]


def bypass(graph: gs.Graph, node: gs.Node, keep: gs.Tensor, drop: gs.Tensor) -> bool:
    """Make every reader of `drop` (an output of `node`) read `keep` instead, so `node` dies.

    When `drop` is a graph output its name must survive: if `keep` is produced by a node and is
    neither a graph input nor output, that producer is made to write `drop` directly. Returns
    False (graph unchanged) when the rewiring is impossible.
    """
    if is_graph_output(graph, drop):
        if is_graph_input(graph, keep) or is_graph_output(graph, keep) or len(keep.inputs) != 1:
            return False
        producer = keep.inputs[0]
        for consumer in list(keep.outputs):
            if consumer is not node:
                _replace_input(consumer, keep, drop)
        producer.outputs[producer.outputs.index(keep)] = drop
        node.outputs.clear()
        node.inputs.clear()
        return True
    for consumer in list(drop.outputs):
        _replace_input(consumer, drop, keep)
    node.outputs.clear()
    node.inputs.clear()
    return True


def _replace_input(consumer: gs.Node, old: gs.Tensor, new: gs.Tensor) -> None:
    for i, tensor in enumerate(consumer.inputs):
        if tensor is old:
            consumer.inputs[i] = new


def numel(shape) -> Optional[int]:
    """Element count of a fully known shape, else None."""
    if shape is None or any(not isinstance(d, (int, np.integer)) or d < 0 for d in shape):
        return None
    return int(np.prod(shape, dtype=np.int64))


def name_nodes(graph: gs.Graph) -> None:
    """Plans, exclusions and reports refer to nodes by name: give unnamed or repeated ones a unique one."""
    seen: set[str] = set()
    for i, node in enumerate(graph.nodes):
        if not node.name or node.name in seen:
            base = node.name or f"{node.op}_{i}"
            node.name = base if base not in seen else f"{base}_{i}"
        seen.add(node.name)
