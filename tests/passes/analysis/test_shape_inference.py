"""Shape inference on long vectors (issue 26, class 13): ONNX's data propagation stores every
element of a rank-1 tensor it meets as a shape dim (~150 bytes each), so a 256 MB vector cost
12.5 GB of RSS before any pass ran. Shape tensors are short; long vectors are inferred without it."""
import subprocess
import sys
import textwrap

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from hewn.core.ir import to_graph
from hewn.core.pass_infra import Context
from hewn.passes.analysis.shape_inference import ShapeInfo
from hewn.targets import CPU

N = 8 << 20   # 8M floats: 32 MB; data propagation over it alone costs > 1 GB


def _model(n: int) -> onnx.ModelProto:
    """A ConstantOfShape vector (length n) plus the input, and a Reshape whose shape comes from
    Shape/Concat arithmetic: the part data propagation exists for."""
    nodes = [helper.make_node("ConstantOfShape", ["len"], ["big"], value=numpy_helper.from_array(np.array([0.5], np.float32))),
             helper.make_node("Add", ["big", "x"], ["s"]),
             helper.make_node("ReduceSum", ["s"], ["total"], keepdims=0),
             helper.make_node("Shape", ["m"], ["ms"]),
             helper.make_node("Concat", ["minus1", "ms"], ["target"], axis=0),
             helper.make_node("Reshape", ["m", "target"], ["r"])]
    inits = [numpy_helper.from_array(np.array([n], np.int64), "len"),
             numpy_helper.from_array(np.array([-1], np.int64), "minus1")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1]),
                                           helper.make_tensor_value_info("m", TensorProto.FLOAT, [2, 3])],
                              [helper.make_tensor_value_info("total", TensorProto.FLOAT, []),
                               helper.make_tensor_value_info("r", TensorProto.FLOAT, None)], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def _info(model: onnx.ModelProto) -> ShapeInfo:
    graph = to_graph(model)
    return ShapeInfo.compute(graph, Context(target=CPU, ir_version=model.ir_version))


def test_shapes_of_a_long_vector_model_are_inferred():
    info = _info(_model(N))
    assert info.shape("big") == (N,) and info.shape("s") == (N,)
    assert info.shape("total") == ()


def test_short_shape_tensors_are_still_propagated():
    info = _info(_model(16))
    assert info.shape("r") == (1, 2, 3)   # Reshape's target came from Shape + Concat: data propagation


def test_a_long_vector_costs_no_memory_in_shape_inference(tmp_path):
    path = tmp_path / "long.onnx"
    onnx.save(_model(N), str(path))
    script = textwrap.dedent(f"""
        import onnx
        from hewn.core.ir import to_graph
        from hewn.core.pass_infra import Context
        from hewn.passes.analysis.shape_inference import ShapeInfo
        from hewn.targets import CPU
        model = onnx.load({str(path)!r})
        graph = to_graph(model)
        from hewn.core.memory import peak_rss_bytes
        before = peak_rss_bytes()
        ShapeInfo.compute(graph, Context(target=CPU, ir_version=8))
        print((peak_rss_bytes() - before) >> 20)
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    grown_mb = int(done.stdout.strip().splitlines()[-1])
    assert grown_mb < 100, f"shape inference of a 32 MB vector grew peak RSS by {grown_mb} MB"
