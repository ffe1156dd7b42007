"""ShapeInfo analysis: dtype and shape of every tensor, from ONNX shape inference with data propagation."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from hewn.core.ir import to_model
from hewn.core.pass_infra import Analysis

Shape = tuple  # ints for known dims, str for symbolic ones, None for unknown


@dataclass
class ShapeInfo(Analysis):
    shapes: dict[str, Shape]
    dtypes: dict[str, np.dtype]

    @classmethod
    def compute(cls, graph: gs.Graph, ctx) -> "ShapeInfo":
        model = _infer(_without_weights(graph, ctx))
        shapes, dtypes = {}, {}
        values = list(model.graph.input) + list(model.graph.value_info) + list(model.graph.output)
        for value in values:
            ttype = value.type.tensor_type
            if ttype.elem_type:
                dtypes[value.name] = onnx.helper.tensor_dtype_to_np_dtype(ttype.elem_type)
            if ttype.HasField("shape"):
                shapes[value.name] = tuple(
                    d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in ttype.shape.dim
                )
        for tensor in graph.tensors().values():
            if isinstance(tensor, gs.Constant):
                shapes[tensor.name] = tuple(tensor.shape)
                dtypes[tensor.name] = np.dtype(tensor.dtype)
        return cls(shapes, dtypes)

    def shape(self, name: str) -> Optional[Shape]:
        return self.shapes.get(name)

    def dtype(self, name: str) -> Optional[np.dtype]:
        return self.dtypes.get(name)


def _infer(model: onnx.ModelProto) -> onnx.ModelProto:
    """ONNX shape inference; ORT's symbolic inference where the graph holds its contrib ops
    (SkipLayerNormalization, BiasGelu, ...), which ONNX's does not know."""
    if any(node.domain == "com.microsoft" for node in model.graph.node):
        from hewn.core.runtime import symbolic_shape_inference

        try:
            return symbolic_shape_inference().infer_shapes(model, auto_merge=True, guess_output_rank=True)
        except Exception:  # an op it does not know either: fall back to what ONNX can infer
            pass
    plain = onnx.shape_inference.infer_shapes(model)
    if _long_vectors(plain):
        # ONNX's data propagation turns every rank-1 tensor it meets into a TensorShapeProto, one
        # dim per element (~150 bytes each: 12.5 GB for a 256 MB vector). Shape tensors are a few
        # elements long; a model with a vector this long keeps the shapes inferred without it
        return plain
    return onnx.shape_inference.infer_shapes(model, data_prop=True)


# the longest rank-1 tensor data propagation may see (shape tensors have a handful of elements)
_MAX_PROPAGATED = 1 << 16


def _long_vectors(model: onnx.ModelProto) -> list[str]:
    graph = model.graph
    values = list(graph.input) + list(graph.value_info) + list(graph.output)
    long = [v.name for v in values if v.type.tensor_type.HasField("shape") and len(v.type.tensor_type.shape.dim) == 1
            and v.type.tensor_type.shape.dim[0].dim_value > _MAX_PROPAGATED]
    long += [t.name for t in graph.initializer if len(t.dims) == 1 and t.dims[0] > _MAX_PROPAGATED]
    return long


# Constants up to this size keep their values (shape tensors, axes) for data propagation.
_KEEP_VALUE_BYTES = 4096


def _without_weights(graph: gs.Graph, ctx) -> onnx.ModelProto:
    """The graph with large constants turned into typed inputs: inference needs their shapes,
    not their bytes (serializing AlexNet's 240 MB four times cost 14 s of a 30 s compile). Swapped
    in place and put back after the export: a copy of the graph cost 2 s per inference on a
    32k-node chain."""
    swapped: list[tuple[gs.Node, int, gs.Constant]] = []
    readers: list[tuple[gs.Constant, list]] = []
    outputs, inputs = list(graph.outputs), list(graph.inputs)
    try:
        for tensor in list(graph.tensors().values()):
            if isinstance(tensor, gs.Constant) and tensor.values.nbytes > _KEEP_VALUE_BYTES:
                stand_in = gs.Variable(tensor.name, dtype=tensor.dtype, shape=tuple(tensor.shape))
                readers.append((tensor, list(tensor.outputs)))
                for consumer in list(tensor.outputs):
                    for i, t in enumerate(consumer.inputs):
                        if t is tensor:
                            consumer.inputs[i] = stand_in
                            swapped.append((consumer, i, tensor))
                graph.outputs = [stand_in if t is tensor else t for t in graph.outputs]
                graph.inputs.append(stand_in)
        return to_model(graph, ir_version=ctx.ir_version)
    finally:
        for consumer, i, tensor in reversed(swapped):
            consumer.inputs[i] = tensor
        for tensor, order in readers:   # the readers' order as it was (list's own slice: no re-sync)
            list.__setitem__(tensor.outputs, slice(None), order)
        graph.outputs, graph.inputs = outputs, inputs
