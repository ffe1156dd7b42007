import numpy as np
import onnx
from onnx import helper, numpy_helper

from hewn.core.ir import to_graph
from hewn.core.pass_infra import Context
from hewn.passes import CostModel
from hewn.targets import CPU


def test_macs_params_and_activation_bytes_by_hand():
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal(s).astype(np.float32), n) for n, s in
             [("w", (8, 2, 3, 3)), ("wt", (8, 4, 2, 2)), ("g", (10, 512))]]
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1], group=2),   # 1x8x6x6 out, 2x3x3 per out
        helper.make_node("ConvTranspose", ["c", "wt"], ["t"], strides=[2, 2]),      # in 1x8x6x6, 4x2x2 per in
        helper.make_node("Flatten", ["t"], ["f"]),                                  # 1 x 4*12*12 = 576
        helper.make_node("Slice", ["f", "st", "en", "ax"], ["s"]),
        helper.make_node("Gemm", ["s", "g"], ["y"], transB=1),                      # 1x512 @ 512x10
    ]
    inits += [numpy_helper.from_array(np.array(v, np.int64), n) for n, v in [("st", [0]), ("en", [512]), ("ax", [1])]]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 4, 6, 6])],
                              [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 10])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)
    cost = Context(CPU).analysis(CostModel, to_graph(model))
    conv = 8 * 6 * 6 * (2 * 3 * 3)
    convt = (8 * 6 * 6) * (4 * 2 * 2)
    gemm = 10 * 512
    assert sorted(cost.node_macs.values()) == sorted([conv, convt, gemm])
    assert cost.total_macs == conv + convt + gemm
    assert cost.params == 8 * 2 * 9 + 8 * 4 * 4 + 10 * 512 + 3
    acts = 4 * 36 + 8 * 36 + 4 * 144 + 576 + 512 + 10  # x, c, t, f, s, y
    assert cost.activation_bytes == acts * 4
    assert cost.op_counts["Conv"] == 1


def test_inspect_counts_weights_held_in_constant_nodes(tmp_path, capsys):
    """(issue 29) PP-OCR's weights sit in Constant nodes: `hewn inspect` said 'params 0'."""
    import json

    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from hewn.cli import main

    w = numpy_helper.from_array(np.ones((4, 6), np.float32), "w")
    graph = helper.make_graph([helper.make_node("Constant", [], ["c"], value=w), helper.make_node("MatMul", ["x", "c"], ["y"])],
                              "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 6])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(tmp_path / "m.onnx"))
    assert main(["inspect", str(tmp_path / "m.onnx"), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["params"] == 24 and info["param_bytes"] == 96 and info["macs"] == 2 * 4 * 6


def test_macs_before_and_after_are_counted_on_the_same_graph():
    """(issue 29) A torch export computes Pad widths through a Slice/Transpose/Concat chain that shape
    inference cannot follow: the spatial dims after it were unknown and counted as 1, so the
    report's 'before' had 216 MACs for a conv of 55296 (EfficientNet-Lite0: 3.3M before, 384M after)."""
    import torch

    import hewn

    module = torch.nn.Sequential(torch.nn.ZeroPad2d((0, 1, 0, 1)), torch.nn.Conv2d(3, 8, 3, stride=2)).eval()
    report = hewn.compile(module, example_inputs=(torch.randn(1, 3, 32, 32),), measure_latency=False).report
    assert report["before"]["macs"] == report["after"]["macs"] == 8 * 3 * 9 * 16 * 16
    assert report["before"]["ops"].get("Slice")   # nodes and ops are still the input's own
