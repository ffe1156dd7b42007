"""FoldPadIntoConv: zero padding before a Conv becomes the Conv's pads (outputs unchanged in ORT);
every other Pad is left as it is, with the reason."""
import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from hewn.passes import FoldPadIntoConv
from tests.helpers import check_pass, op_counts

RNG = np.random.default_rng(0)


def _model(pad_node, inits, conv_attrs=None, opset=13, x_shape=(1, 4, 9, 9), group=1):
    w = numpy_helper.from_array(RNG.standard_normal((8, 4 // group, 3, 3)).astype(np.float32), "w")
    b = numpy_helper.from_array(RNG.standard_normal(8).astype(np.float32), "b")
    conv = helper.make_node("Conv", ["p", "w", "b"], ["y"], group=group, **(conv_attrs or {}))
    graph = helper.make_graph([pad_node, conv], "g", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT,
                                                                                   list(x_shape))],
                              [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 8, None, None])], [w, b, *inits])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=8)
    onnx.checker.check_model(model)
    return model


def _pads(values):
    return numpy_helper.from_array(np.array(values, np.int64), "pads")


@pytest.mark.parametrize("pads,conv_attrs,group", [
    ([0, 0, 1, 1, 0, 0, 1, 1], {}, 1),                              # symmetric "same"
    ([0, 0, 0, 0, 0, 0, 1, 1], {"strides": [2, 2]}, 1),             # TF-style: only after (stride 2)
    ([0, 0, 2, 1, 0, 0, 0, 3], {"pads": [1, 1, 1, 1]}, 4),           # on top of the Conv's own, depthwise
])
def test_zero_pad_folds_into_the_conv(pads, conv_attrs, group):
    model = _model(helper.make_node("Pad", ["x", "pads"], ["p"]), [_pads(pads)], conv_attrs, group=group)
    out, result = check_pass(model, FoldPadIntoConv())
    assert op_counts(out) == {"Conv": 1} and result.stats["folded"] == 1


def test_old_opset_attribute_form_folds():
    pad = helper.make_node("Pad", ["x"], ["p"], pads=[0, 0, 1, 1, 0, 0, 1, 1], value=0.0)
    out, _ = check_pass(_model(pad, [], opset=10), FoldPadIntoConv())
    assert op_counts(out) == {"Conv": 1}


@pytest.mark.parametrize("pad,inits,why", [
    (helper.make_node("Pad", ["x", "pads", "v"], ["p"]),
     [_pads([0, 0, 1, 1, 0, 0, 1, 1]), numpy_helper.from_array(np.array(1.5, np.float32), "v")], "not zero"),
    (helper.make_node("Pad", ["x", "pads"], ["p"], mode="reflect"), [_pads([0, 0, 1, 1, 0, 0, 1, 1])], "reflect"),
    (helper.make_node("Pad", ["x", "pads"], ["p"]), [_pads([0, 1, 0, 0, 0, 1, 0, 0])], "channel"),
    (helper.make_node("Pad", ["x", "pads"], ["p"]), [_pads([0, 0, -1, 0, 0, 0, 0, 0])], "crops"),
])
def test_other_pads_are_left_with_the_reason(pad, inits, why):
    model = _model(pad, inits, x_shape=(1, 4, 9, 9)) if why != "channel" else None
    if model is None:  # a channel pad needs a Conv taking 6 channels
        w = numpy_helper.from_array(RNG.standard_normal((8, 6, 3, 3)).astype(np.float32), "w")
        conv = helper.make_node("Conv", ["p", "w"], ["y"])
        graph = helper.make_graph([pad, conv], "g", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT,
                                                                                   [1, 4, 9, 9])],
                                  [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 8, None, None])], [w, *inits])
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)
    from hewn.core.ir import to_graph
    from hewn.core.pass_infra import Context
    from hewn.targets import CPU

    ctx = Context(CPU)
    result = FoldPadIntoConv().run(to_graph(model), ctx)
    assert not result.modified and result.stats["kept"] == 1
    assert why in ctx.notes[0]["why"]
