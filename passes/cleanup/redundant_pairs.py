"""FoldRedundantPairs: peepholes on Reshape/Transpose/Cast chains, as a table of (op, rule) rows.

Each rule looks at one node, rewrites it when the rewrite is exact, and returns a short label of
what it did (for the stats) or None.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from hewn.core.pass_infra import Pass, PassResult

from hewn.core.graph_utils import bypass, const_value
from hewn.passes.analysis.shape_inference import ShapeInfo

# Casts that represent every value of the source type exactly: Cast(Cast(x, wide), T) == Cast(x, T).
_LOSSLESS_WIDENING = {
    np.dtype(np.float16): {np.float32, np.float64},
    np.dtype(np.float32): {np.float64},
    np.dtype(np.int8): {np.int16, np.int32, np.int64, np.float32, np.float64},
    np.dtype(np.uint8): {np.int16, np.int32, np.int64, np.uint16, np.uint32, np.uint64, np.float32, np.float64},
    np.dtype(np.int16): {np.int32, np.int64, np.float32, np.float64},
    np.dtype(np.int32): {np.int64, np.float64},
    np.dtype(np.bool_): {np.int8, np.uint8, np.int16, np.int32, np.int64, np.float16, np.float32, np.float64},
}


def _producer(tensor: gs.Tensor, op: str) -> Optional[gs.Node]:
    if len(tensor.inputs) == 1 and tensor.inputs[0].op == op:
        return tensor.inputs[0]
    return None


def _transpose_pair(graph, node, info) -> Optional[str]:
    first = _producer(node.inputs[0], "Transpose")
    p2 = node.attrs.get("perm")
    if first is None or p2 is None or first.attrs.get("perm") is None:
        return None
    p1 = first.attrs["perm"]
    node.attrs["perm"] = [int(p1[i]) for i in p2]  # y[i] = x[p1[i]], z[i] = y[p2[i]]
    node.inputs[0] = first.inputs[0]
    return "transpose_pairs_merged"


def _identity_transpose(graph, node, info) -> Optional[str]:
    perm = node.attrs.get("perm")
    if perm is None or list(perm) != list(range(len(perm))):
        return None
    return "identity_transposes_removed" if bypass(graph, node, node.inputs[0], node.outputs[0]) else None


def _reshape_pair(graph, node, info) -> Optional[str]:
    first = _producer(node.inputs[0], "Reshape")
    target = const_value(node.inputs[1])
    if first is None or target is None:
        return None
    if 0 in target.tolist() and not node.attrs.get("allowzero", 0):
        return None  # a 0 copies a dim of the intermediate tensor, which would change meaning
    node.inputs[0] = first.inputs[0]
    return "reshape_pairs_merged"


def _noop_reshape(graph, node, info) -> Optional[str]:
    src, dst = info.shape(node.inputs[0].name), info.shape(node.outputs[0].name)
    if not _static(src) or src != dst:
        return None
    return "noop_reshapes_removed" if bypass(graph, node, node.inputs[0], node.outputs[0]) else None


def _cast_pair(graph, node, info) -> Optional[str]:
    first = _producer(node.inputs[0], "Cast")
    if first is None:
        return None
    src = info.dtype(first.inputs[0].name)
    mid = onnx.helper.tensor_dtype_to_np_dtype(first.attrs["to"])
    if src is None or mid.type not in _LOSSLESS_WIDENING.get(np.dtype(src), set()):
        return None
    node.inputs[0] = first.inputs[0]
    return "cast_pairs_merged"


def _noop_cast(graph, node, info) -> Optional[str]:
    src = info.dtype(node.inputs[0].name)
    if src is None or np.dtype(src) != onnx.helper.tensor_dtype_to_np_dtype(node.attrs["to"]):
        return None
    return "noop_casts_removed" if bypass(graph, node, node.inputs[0], node.outputs[0]) else None


def _static(shape) -> bool:
    return shape is not None and all(isinstance(d, (int, np.integer)) and d >= 0 for d in shape)


Rule = Callable[[gs.Graph, gs.Node, ShapeInfo], Optional[str]]
RULES: tuple[tuple[str, Rule], ...] = (
    ("Transpose", _transpose_pair),
    ("Transpose", _identity_transpose),
    ("Reshape", _reshape_pair),
    ("Reshape", _noop_reshape),
    ("Cast", _cast_pair),
    ("Cast", _noop_cast),
)


class FoldRedundantPairs(Pass):
    name = "fold_redundant_pairs"
    requires = (ShapeInfo,)

    @dataclass(frozen=True)
    class Config:
        pass

    def run(self, graph: gs.Graph, ctx) -> PassResult:
        info = ctx.analysis(ShapeInfo, graph)
        stats: dict[str, int] = {}
        for node in list(graph.nodes):
            # Apply rules until none fits, so a merge that leaves an identity is removed in this run.
            while node.inputs and node.outputs:
                label = next((lbl for op, rule in RULES if node.op == op and (lbl := rule(graph, node, info))), None)
                if not label:
                    break
                stats[label] = stats.get(label, 0) + 1
        if stats:
            graph.cleanup()
        return PassResult(modified=bool(stats), stats=stats)
