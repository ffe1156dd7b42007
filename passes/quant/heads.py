"""Detector box-decoding tails stay float (issue 27, Build 4).

YOLO-style heads end in arithmetic on the conv outputs: a DFL Softmax and its fixed arange Conv,
grid offsets added and subtracted, strides multiplied, Sigmoid of the class scores, and a Concat
of boxes in pixels with scores in 0..1. One int8 scale cannot hold both ranges, and every rounding
there moves a box; Ultralytics' and NNCF's exporters keep that tail float. What is recognised here:
the nodes reached backwards from a graph output without passing a learned weighted op, when they
include a Sigmoid or Softmax, a Concat and box arithmetic (Add/Sub/Mul/Div). Anything else (a
classifier's Softmax after its Gemm, a segmentation map's Sigmoid) is not a decoding tail.
"""
from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from hewn.core.graph_utils import const_value

WEIGHTED = ("Conv", "ConvTranspose", "Gemm", "MatMul")
SCORES = ("Sigmoid", "Softmax")
ARITHMETIC = ("Add", "Sub", "Mul", "Div")
MAX_TAIL = 200   # a walk that reaches further is a network's body, not a head's decoding


def _fixed_conv(node: gs.Node) -> bool:
    """DFL's Conv: a constant weight 0, 1, ..., n-1 (an expectation over bins), no learned bias."""
    if node.op != "Conv" or len(node.inputs) < 2 or (len(node.inputs) > 2 and node.inputs[2].name):
        return False
    w = const_value(node.inputs[1])
    return w is not None and w.size > 1 and np.array_equal(w.reshape(-1), np.arange(w.size, dtype=w.dtype))


def decoding_tail(graph: gs.Graph) -> list[str]:
    """Names of the nodes of a detector's decoding tail, or [] when the model has none."""
    seen: dict[int, gs.Node] = {}
    stack = [t for t in graph.outputs]
    while stack:
        tensor = stack.pop()
        for node in tensor.inputs:
            if id(node) in seen or (node.op in WEIGHTED and not _fixed_conv(node)):
                continue
            seen[id(node)] = node
            if len(seen) > MAX_TAIL:
                return []
            if node.op not in ("Shape", "Size"):   # they read only the shape: not a path of values
                stack.extend(t for t in node.inputs if isinstance(t, gs.Variable))
    ops = {n.op for n in seen.values()}
    if not (ops & set(SCORES) and "Concat" in ops and ops & set(ARITHMETIC)):
        return []
    return [n.name for n in graph.nodes if id(n) in seen and n.name]


__all__ = ["decoding_tail"]
