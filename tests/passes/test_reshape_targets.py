"""Constant reshape targets: sizes read off the input itself become 0 (copy), constants stay, a size
from another tensor is left computed; outputs match at several sizes."""
from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
from hewn.passes.cleanup.reshape_targets import ConstantReshapeTargets, _target
from tests.helpers import run_pass
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper


def _const(name, values):
    return h.make_node("Constant", [], [name], value=numpy_helper.from_array(np.array(values, np.int64), name))


def _model(size_from: str) -> onnx.ModelProto:
    """y = Reshape(MatMul(x, W), [dim0(x), dim1(<size_from>), -1, 8])."""
    w = numpy_helper.from_array(np.random.default_rng(0).standard_normal((16, 32)).astype(np.float32), "w")
    nodes = [h.make_node("MatMul", ["x", "w"], ["p"]),
             _const("i0", 0), _const("i1", 1), _const("ax", [0]), _const("rest", [-1, 8]),
             h.make_node("Shape", ["x"], ["sx"]), h.make_node("Shape", [size_from], ["sy"]),
             h.make_node("Gather", ["sx", "i0"], ["b"]), h.make_node("Gather", ["sy", "i1"], ["s"]),
             h.make_node("Unsqueeze", ["b", "ax"], ["bu"]), h.make_node("Unsqueeze", ["s", "ax"], ["su"]),
             h.make_node("Concat", ["bu", "su", "rest"], ["target"], axis=0),
             h.make_node("Reshape", ["p", "target"], ["y"], name="reshape")]
    g = h.make_graph(nodes, "g", [h.make_tensor_value_info("x", T.FLOAT, ["batch", "seq", 16]),
                                  h.make_tensor_value_info("m", T.FLOAT, ["batch", "seq", 2])],
                     [h.make_tensor_value_info("y", T.FLOAT, None)], initializer=[w])
    return h.make_model(g, opset_imports=[h.make_opsetid("", 17)])


def constant_reshape_targets(model: onnx.ModelProto) -> tuple[onnx.ModelProto, dict]:
    return run_pass(ConstantReshapeTargets(), model)


def _run(model, x):
    s = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return s.run(None, {"x": x, "m": np.zeros((x.shape[0], x.shape[1], 2), np.float32)})[0]


def test_sizes_of_the_input_itself_become_a_constant_target():
    before = _model("x")
    after, report = constant_reshape_targets(onnx.ModelProto.FromString(before.SerializeToString()))
    assert report["fused"] == 1 and not report["left"]
    reshape = next(n for n in after.graph.node if n.op_type == "Reshape")
    const = next(n for n in after.graph.node if n.output[0] == reshape.input[1])
    assert numpy_helper.to_array(const.attribute[0].t).tolist() == [0, 0, -1, 8]
    assert not any(n.op_type in ("Shape", "Gather", "Concat") for n in after.graph.node)   # the arithmetic is gone
    again, second = constant_reshape_targets(onnx.ModelProto.FromString(after.SerializeToString()))
    assert second["fused"] == 0 and again.SerializeToString() == after.SerializeToString()   # nothing left to do
    for shape in ((1, 3, 16), (2, 5, 16), (3, 1, 16)):
        x = np.random.default_rng(1).standard_normal(shape).astype(np.float32)
        np.testing.assert_array_equal(_run(after, x), _run(before, x))


def test_a_size_from_a_tensor_with_its_own_symbol_is_made_minus_one_only_when_free():
    # dim 1 of m is "seq" too: same symbol, so it is the input's own size
    after, report = constant_reshape_targets(_model("m"))
    assert report["fused"] == 1
    # a symbol that is not the input's at that position, with a -1 already there, stays computed
    assert _target(["batch", "other", -1, 8], ["batch", "seq", 32]) is None
    assert _target(["batch", "other", 8], ["batch", "seq", 32]) == [0, -1, 8]
    assert _target([2, "seq", 4, 8], ["batch", "seq", 32]) == [2, 0, 4, 8]
