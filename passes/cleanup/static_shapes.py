"""StaticShapes: give every graph input a fixed shape (mobile EPs — NNAPI, CoreML, XNNPACK —
compile a static graph; a dynamic dimension sends the node back to the CPU EP).

Symbolic dimensions are filled from `shapes=` or from the reference inputs compile() measured
with. Intermediate shapes are cleared and re-inferred, so the Shape -> Gather -> Reshape
arithmetic that exporters emit for dynamic batches folds away in the next cleanup.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import onnx_graphsurgeon as gs

from hewn.core.errors import ConfigError
from hewn.core.pass_infra import Pass, PassResult


class StaticShapes(Pass):
    name = "static_shapes"

    @dataclass(frozen=True)
    class Config:
        shapes: tuple[tuple[str, tuple[int, ...]], ...] = field(default=())  # (input name, shape) pairs

    def run(self, graph: gs.Graph, ctx) -> PassResult:
        wanted = dict(self.config.shapes)
        unknown = sorted(set(wanted) - {t.name for t in graph.inputs})
        if unknown:
            raise ConfigError(f"static_shapes: {unknown} are not graph inputs; inputs are "
                              f"{[t.name for t in graph.inputs]}")
        fixed = {}
        for tensor in graph.inputs:
            shape = list(tensor.shape or [])
            if tensor.name in wanted:
                new = [int(d) for d in wanted[tensor.name]]
                if shape and len(new) != len(shape):
                    raise ConfigError(f"static_shapes: input '{tensor.name}' has rank {len(shape)}, got shape {new}")
            elif all(isinstance(d, int) and d > 0 for d in shape):
                continue
            else:
                new = self._from_reference(tensor, shape, ctx)
            if new != shape:
                tensor.shape = new
                fixed[tensor.name] = new
        if not fixed:
            return PassResult(False, {"inputs": "already static"})
        inputs = {t.name for t in graph.inputs}
        for tensor in graph.tensors().values():  # re-inferred from the new input shapes
            if isinstance(tensor, gs.Variable) and tensor.name not in inputs and tensor not in graph.outputs:
                tensor.shape = None
        for tensor, shape in zip(graph.outputs, _output_shapes(graph, ctx)):
            tensor.shape = shape
        return PassResult(True, {"fixed": fixed})

    def _from_reference(self, tensor: gs.Variable, shape: list, ctx) -> list[int]:
        feeds = ctx.reference.feeds if ctx.reference is not None else []
        if not feeds or tensor.name not in feeds[0]:
            raise ConfigError(f"static_shapes: input '{tensor.name}' has shape {shape} with symbolic dimensions; "
                              f"give example/calibration inputs or shapes=(('{tensor.name}', (...)),)")
        return [int(d) for d in feeds[0][tensor.name].shape]


def _output_shapes(graph: gs.Graph, ctx) -> list:
    """The graph outputs' shapes inferred from the new input shapes (unknown dims stay symbolic)."""
    from hewn.passes.analysis.shape_inference import _infer, _without_weights

    saved = [t.shape for t in graph.outputs]
    for t in graph.outputs:
        t.shape = None
    inferred = _infer(_without_weights(graph, ctx))
    found = {v.name: [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in
                      v.type.tensor_type.shape.dim] for v in inferred.graph.output if v.type.tensor_type.HasField("shape")}
    return [found.get(t.name, old) for t, old in zip(graph.outputs, saved)]
