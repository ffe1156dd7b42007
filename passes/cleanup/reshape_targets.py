"""ConstantReshapeTargets: a Reshape target computed at run time from Shape -> Gather -> Unsqueeze
-> Concat (how torch exports `x.view(*x.shape[:2], -1, d)`) becomes a constant such as
[0, 0, -1, 256], where 0 copies the input's own size (Reshape's allowzero=0). The shape arithmetic
then has no reader and goes. On a dynamic-shape decoder export that is ~15 nodes a layer, each a
kernel launch per decode step.

Which computed sizes equal which input sizes comes from ONNX Runtime's symbolic shape inference
on a weight-free export of the graph (weights on disk, and large ones, become graph inputs of
their shape: none is read or copied). A size is replaced only when it is the input's own size at
the same position (-> 0) or a constant; one leftover becomes -1 when the target has no -1 yet.
The caller verifies the result numerically at sizes where sequence and past differ, which is what
an inference that merged two symbols would get wrong.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
import onnx_graphsurgeon as gs
from hewn.core import external
from hewn.core.graph_utils import const_value
from hewn.core.ir import as_graph_input
from hewn.core.pass_infra import Pass, PassResult

INLINE_ELEMENTS = 4096   # initializers up to this size stay in the shape-only export (shape constants)


def _shape_only(graph: gs.Graph) -> onnx.ModelProto:
    """The graph exported without weight values: every Constant on disk or larger than
    INLINE_ELEMENTS becomes a graph input of its type and shape (copied graph: values shared)."""
    light = graph.copy()
    for t in light.tensors().values():
        if not isinstance(t, gs.Constant) or (not external.on_disk(t)
                                              and int(np.prod(t.shape, dtype=np.int64)) <= INLINE_ELEMENTS):
            continue
        as_graph_input(light, t)
    return gs.export_onnx(light, do_type_check=False)


def _symbolic(model: onnx.ModelProto):
    """(symbolic values of shape tensors, symbolic dims of every tensor) or raises."""
    from hewn.core.runtime import symbolic_shape_inference

    sym = symbolic_shape_inference()(2**31 - 1, False, False, 0)   # auto_merge off: no guessed equalities
    sym._preprocess(model)
    while sym.run_:
        sym._infer_impl()
    dims = {}
    for name, vi in sym.known_vi_.items():
        shape = vi.type.tensor_type.shape if vi.type.HasField("tensor_type") else None
        if shape is not None and len(shape.dim):
            dims[name] = [d.dim_param if d.HasField("dim_param") else (d.dim_value if d.HasField("dim_value") else None)
                          for d in shape.dim]
    return sym.sympy_data_, dims


def _target(values, in_dims) -> list[int] | None:
    """A constant Reshape target with the same meaning, or None."""
    if values is None or in_dims is None:
        return None
    out, unknown = [], []
    for j, v in enumerate(list(values)):
        try:
            out.append(int(v))
            continue
        except (TypeError, ValueError):   # a symbol (sympy) or its name
            pass
        if j < len(in_dims) and in_dims[j] is not None and str(v) == str(in_dims[j]):
            out.append(0)
        else:
            unknown.append(j)
            out.append(-1)
    if len(unknown) > 1 or (unknown and out.count(-1) > 1):
        return None
    return out


def _computed(node: gs.Node) -> bool:
    """A Reshape (allowzero off) whose target is neither a constant nor a weight on disk."""
    if node.op != "Reshape" or node.attrs.get("allowzero", 0) or len(node.inputs) < 2:
        return False
    target = node.inputs[1]
    return not external.on_disk(target) and const_value(target) is None


class ConstantReshapeTargets(Pass):
    name = "constant_reshape_targets"

    @dataclass(frozen=True)
    class Config:
        pass

    def run(self, graph: gs.Graph, ctx) -> PassResult:
        """Stats: fused (targets made constant), left (node, reason) for the others."""
        computed = [n for n in graph.nodes if _computed(n)]
        if not computed:
            return PassResult(False, {"fused": 0})
        try:
            values, dims = _symbolic(_shape_only(graph))
        except Exception as exc:  # noqa: BLE001 - inference failing leaves every target as it is
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            return PassResult(False, {"fused": 0, "left": [{"node": "(all)",
                                                             "reason": f"symbolic shape inference failed: {first}"}]})
        replaced, left = 0, []
        for node in computed:
            target = _target(values.get(node.inputs[1].name), dims.get(node.inputs[0].name))
            if target is None:
                left.append({"node": node.name, "reason": "a size that is neither constant nor the input's own"})
                continue
            name = ctx.names.make(self.name, node.name, "target")
            out = gs.Variable(name, dtype=np.int64, shape=[len(target)])
            graph.nodes.append(gs.Node("Constant", name, attrs={"value": gs.Constant(name, np.array(target, np.int64))},
                                       outputs=[out]))
            node.inputs[1] = out
            replaced += 1
        if replaced:
            graph.cleanup().toposort()
        return PassResult(bool(replaced), {"fused": replaced, "left": left})


__all__ = ["ConstantReshapeTargets"]
