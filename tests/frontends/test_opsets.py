"""Opsets are those the runtime runs: the cpu target takes what the installed ONNX Runtime has
kernels for (it refused opsets 22-26 that ORT 1.32 runs), older models are upgraded for the user
and verified, and a model of ai.onnx.ml ops alone is not 'without an opset'."""
from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper

import hewn
from hewn.core.runtime import ort_max_opset


def test_cpu_takes_the_opsets_the_installed_runtime_runs():
    assert hewn.get_target("cpu").opset_range[1] == ort_max_opset() >= 22
    newest = ort_max_opset()
    model = onnx.parser.parse_model(f"""<ir_version: 10, opset_import: ["" : {newest}]>
    g (float[2, 4] x) => (float[2, 4] y) {{ a = Identity(x)
                                            y = Relu(a) }}""")
    result = hewn.compile(model, "cpu")
    assert result.report["frontend"]["opset"] == newest and result.report["verification"]["passed"]


def test_a_model_of_ml_ops_only_compiles():
    node = helper.make_node("Normalizer", ["x"], ["y"], domain="ai.onnx.ml", norm="L2")
    graph = helper.make_graph([node], "ml", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("ai.onnx.ml", 1)])
    model.ir_version = 8
    result = hewn.compile(model)
    x = np.array([[3, 4, 0], [1, 0, 0]], np.float32)
    np.testing.assert_allclose(result.session().run(None, {"x": x})[0], [[0.6, 0.8, 0], [1, 0, 0]], rtol=1e-6)
