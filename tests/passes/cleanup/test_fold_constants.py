import numpy as np
import onnx
from onnx import helper, numpy_helper

from hewn.passes import FoldConstants
from tests.helpers import check_pass, op_counts, parse


def test_shape_subgraph_folds_to_a_constant_reshape():
    model = parse("""
    <ir_version: 8, opset_import: ["" : 13]>
    g (float[2, 3, 4] x) => (float[2, 12] y) {
        s = Shape(x)
        i0 = Constant<value = int64[1] {0}>()
        d0 = Gather<axis = 0>(s, i0)
        m1 = Constant<value = int64[1] {-1}>()
        shape = Concat<axis = 0>(d0, m1)
        y = Reshape(x, shape)
    }""")
    out, result = check_pass(model, FoldConstants())
    assert op_counts(out) == {"Reshape": 1}
    assert result.stats["nodes_folded"] == 5


def test_transpose_of_weight_is_folded_even_when_large():
    w = numpy_helper.from_array((np.random.default_rng(0).standard_normal((400, 300)) / np.sqrt(300)).astype(np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("Transpose", ["w"], ["wt"], perm=[1, 0]), helper.make_node("MatMul", ["x", "wt"], ["y"])],
        "g", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [2, 300])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [2, 400])], [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)
    # ORT's MatMul sums the 300 products in another order once the weight is pre-transposed:
    # float32 reassociation, ~sqrt(300) * 6e-8 relative, hence atol 1e-5 on O(1) outputs.
    out, _ = check_pass(model, FoldConstants(), atol=1e-5)
    assert op_counts(out) == {"MatMul": 1}


def test_compact_constant_of_shape_is_not_blown_up():
    shape = numpy_helper.from_array(np.array([2048, 1000], np.int64), "shape")
    value = helper.make_tensor("v", onnx.TensorProto.FLOAT, [1], [0.5])
    graph = helper.make_graph(
        [helper.make_node("ConstantOfShape", ["shape"], ["w"], value=value),
         helper.make_node("MatMul", ["x", "w"], ["y"])],
        "g", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 2048])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 1000])], [shape])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)
    out, result = check_pass(model, FoldConstants(), expect_modified=False)
    assert op_counts(out) == {"ConstantOfShape": 1, "MatMul": 1}
    assert out.ByteSize() < 10_000
    assert result.stats["kept_unfolded_too_large"]
    # Asked for explicitly, it folds.
    out, _ = check_pass(model, FoldConstants(FoldConstants.Config(max_growth_bytes=64 << 20)))
    assert op_counts(out) == {"MatMul": 1}


def test_random_ops_are_never_frozen():
    model = parse("""
    <ir_version: 8, opset_import: ["" : 13]>
    g (float[2] x) => (float[2] y) {
        r = RandomUniform<shape = [2], seed = 1.0>()
        y = Add(x, r)
    }""")
    graph_model, _ = check_pass(model, FoldConstants(), expect_modified=False)
    assert op_counts(graph_model)["RandomUniform"] == 1
