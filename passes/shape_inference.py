"""ShapeInfo analysis: dtype and shape of every tensor, from ONNX shape inference with data propagation."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from compiler.ir import EXTERNAL_DATA_THRESHOLD, to_model
from compiler.pass_infra import Analysis

Shape = tuple  # ints for known dims, str for symbolic ones, None for unknown


@dataclass
class ShapeInfo(Analysis):
    shapes: dict[str, Shape]
    dtypes: dict[str, np.dtype]

    @classmethod
    def compute(cls, graph: gs.Graph, ctx) -> "ShapeInfo":
        model = to_model(graph, ir_version=ctx.ir_version)
        if model.ByteSize() < EXTERNAL_DATA_THRESHOLD:
            model = onnx.shape_inference.infer_shapes(model, data_prop=True)
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
