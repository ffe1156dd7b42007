"""The one MAC model: multiply-accumulates of one op from its tensor shapes.

CostModel uses it on ONNX graphs; the pruning and planner cost of a plan (PlanCost) uses it on
ONNX or fx ops with the shapes they would have after pruning. Symbolic dimensions (batch,
sequence) count as 1, so MACs are per unit of each symbolic dim. Weight shapes carry the
per-group input width (w[1] for Conv, the output width per group for ConvTranspose), so grouped
and depthwise convs need no special case, pruned or not.
"""
from __future__ import annotations

from typing import Callable, Optional, Sequence

import numpy as np

Shape = Optional[Sequence]


def dims(shape: Shape) -> Optional[list[int]]:
    if shape is None:
        return None
    return [int(d) if isinstance(d, (int, np.integer)) and d > 0 else 1 for d in shape]


def prod(values) -> int:
    return int(np.prod(values, dtype=np.int64)) if values is not None else 0


def _conv(w_index: int) -> Callable:
    def rule(ins, outs, attrs) -> int:
        w, y = ins[w_index], outs[0]
        return prod(y) * prod(w[1:]) if w and y else 0
    return rule


def _conv_transpose(ins, outs, attrs) -> int:
    x, w = ins[0], ins[1]
    return prod(x) * prod(w[1:]) if x and w else 0


def _gemm(ins, outs, attrs) -> int:
    a, y = ins[0], outs[0]
    if not a or not y or len(a) != 2:
        return 0
    return prod(y) * (a[0] if attrs.get("transA", 0) else a[1])


def _matmul(ins, outs, attrs) -> int:
    a, y = ins[0], outs[0]
    return prod(y) * a[-1] if a and y is not None else 0


def _attention(ins, outs, attrs) -> int:
    q, k, v = ins[0], ins[1], ins[2]
    return prod(q[:-1]) * k[-2] * (q[-1] + v[-1]) if q and k and v else 0


RULES: dict[str, Callable] = {
    "Conv": _conv(1),
    "ConvInteger": _conv(1),
    "QLinearConv": _conv(3),
    "ConvTranspose": _conv_transpose,
    "Gemm": _gemm,
    "MatMul": _matmul,
    "MatMulInteger": _matmul,
    "Linear": _matmul,                      # torch.fx
    "ScaledDotProductAttention": _attention,  # torch.fx
}


def op_macs(kind: str, inputs: Sequence[Shape], outputs: Sequence[Shape], attrs: dict | None = None) -> int:
    """MACs of one op; 0 for ops without multiply-adds or with unknown shapes."""
    rule = RULES.get(kind)
    if rule is None:
        return 0
    try:
        return int(rule([dims(s) for s in inputs], [dims(s) for s in outputs], attrs or {}))
    except (TypeError, IndexError):
        return 0
