"""FoldConstants: evaluate subgraphs whose inputs are all constant, once, at compile time.

Folding may not blow a compact tensor up: `ConstantOfShape([2048, 1000])` is 8 bytes of shape
but 8 MB once folded. A node is folded only when its outputs are no larger than its inputs plus
`max_growth_bytes` (graphsurgeon's own `size_threshold` would also refuse a harmless Transpose
of a large weight).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx_graphsurgeon as gs
from onnx_graphsurgeon.logger import G_LOGGER

from hewn.core import external
from hewn.core.pass_infra import Pass, PassResult

from hewn.core.graph_utils import numel
from hewn.passes.analysis.shape_inference import ShapeInfo

G_LOGGER.severity = G_LOGGER.ERROR

# Ops whose value changes between runs; folding them would freeze one draw.
NONDETERMINISTIC = {"RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike", "Multinomial",
                    "Bernoulli"}

# DequantizeLinear of an int8 weight is what ORT fuses into integer kernels; folding it would
# turn the 1-byte weight back into a float one and lose the fusion.
KEEP_QUANTIZED = {"DequantizeLinear", "QuantizeLinear"}


class FoldConstants(Pass):
    name = "fold_constants"
    requires = (ShapeInfo,)

    @dataclass(frozen=True)
    class Config:
        max_growth_bytes: int = 64 << 10  # how much larger than its inputs a folded tensor may be
        fold_shapes: bool = True          # fold Shape/Size of tensors whose shape is static

    def run(self, graph: gs.Graph, ctx) -> PassResult:
        info = ctx.analysis(ShapeInfo, graph)
        nodes_before = len(graph.nodes)
        constants_before = _constant_bytes(graph)
        skipped: list[str] = []
        on_disk: list[str] = []
        shared_ok = [True]   # second round: no copies of shared weights

        def too_big(node: gs.Node) -> bool:
            if node.op in NONDETERMINISTIC or node.op in KEEP_QUANTIZED:
                return True
            if any(external.on_disk(t) for t in node.inputs):
                on_disk.append(node.name or node.op)  # folding would pull the file into memory
                return True
            out_bytes = sum(_bytes(t, info) for t in node.outputs)
            in_bytes = sum(_bytes(t, info) for t in node.inputs)
            if out_bytes > in_bytes + self.config.max_growth_bytes or \
                    (not shared_ok[0] and out_bytes > SMALL and _reads_shared_constant(node)):
                skipped.append(node.name or node.op)
                return True
            return False

        sliced = _fold_sliced_shapes(graph, info)
        # the second round differs only where a constant has several readers: without one, the
        # copy it would start from (a whole-graph copy: 2 s on a 32k-node chain) is not taken
        before = graph.copy() if _has_shared_constant(graph) else None
        graph.fold_constants(fold_shapes=self.config.fold_shapes, should_exclude_node=too_big,
                             error_ok=True, flatten_subgraphs=False)
        graph.cleanup()
        if before is not None and _constant_bytes(graph) > constants_before + self.config.max_growth_bytes:
            # a weight read by several nodes was copied (a transposed or sliced copy beside the
            # original): a lossless pass must not grow the model, so fold again without those copies
            graph.__dict__.update(before.__dict__)
            shared_ok[0] = False
            graph.fold_constants(fold_shapes=self.config.fold_shapes, should_exclude_node=too_big,
                                 error_ok=True, flatten_subgraphs=False)
            graph.cleanup()
        folded = nodes_before - len(graph.nodes)
        if sliced and not folded:
            folded = sliced
        stats = {"nodes_folded": folded, "constant_bytes_delta": _constant_bytes(graph) - constants_before}
        if skipped:
            stats["kept_unfolded_too_large"] = sorted(set(skipped))
        if on_disk:
            stats["kept_unfolded_weights_on_disk"] = sorted(set(on_disk))
        return PassResult(modified=folded > 0, stats=stats)


def _fold_sliced_shapes(graph: gs.Graph, info: ShapeInfo) -> int:
    """Shape with start/end (opset 15) of a static tensor, folded here: onnx-graphsurgeon's shape
    folding ignores the two attributes and returns the whole shape (GroupNormalization's expansion
    then reshaped to a wrong size)."""
    count = 0
    for node in list(graph.nodes):
        if node.op != "Shape" or not ({"start", "end"} & set(node.attrs)):
            continue
        x = node.inputs[0]
        shape = list(x.values.shape) if isinstance(x, gs.Constant) else info.shape(x.name)
        if shape is None or not all(isinstance(d, int) and d >= 0 for d in shape):
            continue
        rank = len(shape)
        start, end = node.attrs.get("start", 0), node.attrs.get("end", rank)
        start, end = (start + rank if start < 0 else start), (end + rank if end < 0 else end)
        out = node.outputs[0]
        out.inputs.clear()
        out.to_constant(np.array(shape[max(start, 0):min(end, rank)], dtype=np.int64))
        count += 1
    if count:
        graph.cleanup()
    return count


SMALL = 1 << 10  # shape arithmetic and scalars: folding them is what makes shapes static


def _has_shared_constant(graph: gs.Graph) -> bool:
    return any(len(t.outputs) > 1 and (isinstance(t, gs.Constant) or (t.inputs and t.inputs[0].op == "Constant"))
               for t in graph.tensors().values())


def _reads_shared_constant(node: gs.Node) -> bool:
    return any(isinstance(t, gs.Constant) and len(t.outputs) > 1 for t in node.inputs)


def _bytes(tensor: gs.Tensor, info: ShapeInfo) -> int:
    if isinstance(tensor, gs.Constant):
        return int(tensor.values.nbytes)
    count = numel(info.shape(tensor.name))
    dtype = info.dtype(tensor.name)
    if count is None or dtype is None:
        return 0  # unknown: a shape-computing subgraph, in practice tiny
    return count * np.dtype(dtype).itemsize


def _constant_bytes(graph: gs.Graph) -> int:
    return sum(int(t.values.nbytes) for t in graph.tensors().values() if isinstance(t, gs.Constant))
