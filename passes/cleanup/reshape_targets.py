"""Constant Reshape targets: a target computed at run time from Shape -> Gather -> Unsqueeze ->
Concat (how torch exports `x.view(*x.shape[:2], -1, d)`) becomes a constant such as [0, 0, -1, 256],
where 0 copies the input's own size (Reshape's allowzero=0). The shape arithmetic then has no
reader and goes. On a dynamic-shape decoder export that is ~15 nodes a layer, each a kernel launch
per decode step.

Which computed sizes equal which input sizes comes from ONNX Runtime's symbolic shape inference
(on a weight-free copy: external initializers become inputs of their shape). A size is replaced
only when it is the input's own size at the same position (-> 0) or a constant; one leftover
becomes -1 when the target has no -1 yet. The caller verifies the result numerically at sizes where
sequence and past differ, which is what an inference that merged two symbols would get wrong.
"""
from __future__ import annotations

import numpy as np
import onnx
from hewn.passes.fusion.proto_index import ProtoIndex, attr, drop_dead
from onnx import helper, numpy_helper


def _shape_only(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy without weight values: every initializer that lives outside the proto (or is large)
    becomes a graph input of its type and shape."""
    copy = onnx.ModelProto.FromString(model.SerializeToString())
    big = [i for i in copy.graph.initializer if i.external_data or np.prod(i.dims, dtype=np.int64) > 4096]
    names = {i.name for i in big}
    keep = [i for i in copy.graph.initializer if i.name not in names]
    del copy.graph.initializer[:]
    copy.graph.initializer.extend(keep)
    copy.graph.input.extend(helper.make_tensor_value_info(i.name, i.data_type, list(i.dims)) for i in big)
    return copy


def _symbolic(model: onnx.ModelProto):
    """(symbolic values of shape tensors, symbolic dims of every tensor) or raises."""
    from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference

    sym = SymbolicShapeInference(2**31 - 1, False, False, 0)   # auto_merge off: no guessed equalities
    sym._preprocess(_shape_only(model))
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


def constant_reshape_targets(model: onnx.ModelProto) -> tuple[onnx.ModelProto, dict]:
    reshapes = [n for n in model.graph.node if n.op_type == "Reshape" and not attr(n, "allowzero", 0)]
    ix = ProtoIndex(model.graph)
    computed = [n for n in reshapes if ix.const(n.input[1]) is None]
    if not computed:
        return model, {"fused": 0}
    try:
        values, dims = _symbolic(model)
    except Exception as exc:  # noqa: BLE001 - inference failing leaves every target as it is
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return model, {"fused": 0, "left": [{"node": "(all)", "reason": f"symbolic shape inference failed: {first}"}]}
    replaced, left, consts = 0, [], []
    for node in computed:
        target = _target(values.get(node.input[1]), dims.get(node.input[0]))
        if target is None:
            left.append({"node": node.name, "reason": "a size that is neither constant nor the input's own"})
            continue
        name = f"{node.name}/target"
        consts.append(helper.make_node("Constant", [], [name], name=name,
                                       value=numpy_helper.from_array(np.array(target, np.int64), name)))
        node.input[1] = name
        replaced += 1
    for c in reversed(consts):
        model.graph.node.insert(0, c)
    drop_dead(model.graph)
    return model, {"fused": replaced, "left": left}


__all__ = ["constant_reshape_targets"]
