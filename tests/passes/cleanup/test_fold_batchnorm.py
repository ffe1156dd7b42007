import numpy as np
import onnx
from onnx import helper, numpy_helper

from hewn.passes import FoldBatchNorm
from tests.helpers import check_pass, op_counts

RNG = np.random.default_rng(0)


def _bn_inits(prefix: str, n: int):
    vals = {"scale": RNG.uniform(0.5, 1.5, n), "bias": RNG.normal(0, 0.5, n), "mean": RNG.normal(0, 0.5, n),
            "var": RNG.uniform(0.5, 2.0, n)}
    return [numpy_helper.from_array(v.astype(np.float32), f"{prefix}_{k}") for k, v in vals.items()]


def _model(nodes, inits, x_shape, y_shape, opset=13):
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, x_shape)],
                              [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, y_shape)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=8)
    onnx.checker.check_model(model)
    return model


def _bn(inp, out="y"):
    return helper.make_node("BatchNormalization", [inp, "bn_scale", "bn_bias", "bn_mean", "bn_var"], [out],
                            epsilon=1e-3)


def test_conv_bn_folds_into_conv_with_bias():
    w = numpy_helper.from_array(RNG.standard_normal((8, 3, 3, 3)).astype(np.float32), "w")
    model = _model([helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]), _bn("c")],
                   [w, *_bn_inits("bn", 8)], [1, 3, 6, 6], [1, 8, 6, 6])
    out, result = check_pass(model, FoldBatchNorm())
    assert op_counts(out) == {"Conv": 1} and result.stats["folded"] == 1


def test_grouped_conv_transpose_bn():
    w = numpy_helper.from_array(RNG.standard_normal((4, 3, 2, 2)).astype(np.float32), "w")  # C_in=4, C_out=6, g=2
    b = numpy_helper.from_array(RNG.standard_normal(6).astype(np.float32), "b")
    model = _model([helper.make_node("ConvTranspose", ["x", "w", "b"], ["c"], group=2, strides=[2, 2]), _bn("c")],
                   [w, b, *_bn_inits("bn", 6)], [1, 4, 3, 3], [1, 6, 6, 6])
    out, _ = check_pass(model, FoldBatchNorm())
    assert op_counts(out) == {"ConvTranspose": 1}


def test_gemm_bn_both_weight_layouts():
    for trans_b, shape in ((1, (5, 7)), (0, (7, 5))):
        w = numpy_helper.from_array(RNG.standard_normal(shape).astype(np.float32), "w")
        c = numpy_helper.from_array(RNG.standard_normal(5).astype(np.float32), "c")
        gemm = helper.make_node("Gemm", ["x", "w", "c"], ["g"], transB=trans_b, alpha=0.5, beta=2.0)
        model = _model([gemm, _bn("g")], [w, c, *_bn_inits("bn", 5)], [3, 7], [3, 5])
        out, _ = check_pass(model, FoldBatchNorm())
        assert op_counts(out) == {"Gemm": 1}


def test_matmul_bn_becomes_matmul_add():
    w = numpy_helper.from_array(RNG.standard_normal((7, 5)).astype(np.float32), "w")
    model = _model([helper.make_node("MatMul", ["x", "w"], ["m"]), _bn("m")], [w, *_bn_inits("bn", 5)], [3, 7],
                   [3, 5])
    out, _ = check_pass(model, FoldBatchNorm())
    assert op_counts(out) == {"MatMul": 1, "Add": 1}


def test_bn_kept_when_conv_output_is_shared():
    w = numpy_helper.from_array(RNG.standard_normal((4, 3, 1, 1)).astype(np.float32), "w")
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"]), _bn("c", "b"), helper.make_node("Add", ["b", "c"], ["y"])]
    model = _model(nodes, [w, *_bn_inits("bn", 4)], [1, 3, 4, 4], [1, 4, 4, 4])
    _, result = check_pass(model, FoldBatchNorm(), expect_modified=False)
    assert "also read elsewhere" in result.stats["kept"][0]


def test_bn_after_relu_is_left_with_reason():
    nodes = [helper.make_node("Relu", ["x"], ["r"]), _bn("r")]
    model = _model(nodes, _bn_inits("bn", 3), [1, 3, 4, 4], [1, 3, 4, 4])
    _, result = check_pass(model, FoldBatchNorm(), expect_modified=False)
    assert "follows Relu" in result.stats["kept"][0]
