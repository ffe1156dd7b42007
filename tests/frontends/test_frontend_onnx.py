import re
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import helper, numpy_helper

from hewn import compile
from tests.helpers import parse


def test_several_inputs_outputs_and_symbolic_dims_survive():
    model = parse("""
    <ir_version: 8, opset_import: ["" : 13]>
    g (float[batch, seq, 8] x, int64[batch, seq] ids) => (float[batch, seq, 8] y, int64[batch, seq] z) {
        a = Identity(x)
        y = Relu(a)
        z = Add(ids, ids)
    }""")
    result = compile(model, "cpu")
    dims = [[d.dim_param or d.dim_value for d in o.type.tensor_type.shape.dim] for o in result.onnx.graph.output]
    assert dims == [["batch", "seq", 8], ["batch", "seq"]]
    x = np.random.default_rng(0).standard_normal((3, 5, 8)).astype(np.float32)
    ids = np.arange(15, dtype=np.int64).reshape(3, 5)
    y, z = result.session().run(None, {"x": x, "ids": ids})
    np.testing.assert_array_equal(y, np.maximum(x, 0))
    np.testing.assert_array_equal(z, ids * 2)


def test_external_data_model_loads_and_saves(tmp_path):
    w = numpy_helper.from_array(np.random.default_rng(0).standard_normal((64, 64)).astype(np.float32), "w")
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["m"]), helper.make_node("Identity", ["m"], ["y"])],
                              "g", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [2, 64])],
                              [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [2, 64])], [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)
    src = tmp_path / "in" / "model.onnx"
    src.parent.mkdir()
    onnx.save_model(model, str(src), save_as_external_data=True, location="weights.bin", size_threshold=0)
    result = compile(str(src), "cpu")
    assert [n.op_type for n in result.onnx.graph.node] == ["MatMul"]
    # the weights stayed on disk: the result refers to the input's data file, by absolute path in memory
    kept = result.onnx.graph.initializer[0]
    assert kept.data_location == onnx.TensorProto.EXTERNAL
    assert Path(kept.external_data[0].value) == (src.parent / "weights.bin").resolve()
    out = tmp_path / "out.onnx"
    result.save(out)  # the output gets its own data file, streamed from the input's
    saved = onnx.load(str(out), load_external_data=False).graph.initializer[0]
    assert re.fullmatch(r"out\.onnx\.[0-9a-f]{16}\.data", {e.key: e.value for e in saved.external_data}["location"])
    assert result.onnx.graph.initializer[0].external_data[0].value == kept.external_data[0].value  # not mutated
    x = np.random.default_rng(1).standard_normal((2, 64)).astype(np.float32)
    y = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    np.testing.assert_allclose(y, x @ numpy_helper.to_array(w), rtol=1e-5, atol=1e-5)
    from hewn.core.storage import save_model

    inline = onnx.load(str(out))  # weights read in: saving puts them in a data file when asked
    ext = save_model(inline, tmp_path / "ext.onnx", external_data=True)
    assert len(list(tmp_path.glob("ext.onnx.*.data"))) == 1
    assert inline.graph.initializer[0].data_location == onnx.TensorProto.DEFAULT  # not mutated
    reloaded = onnx.load(str(ext))
    np.testing.assert_array_equal(numpy_helper.to_array(reloaded.graph.initializer[0]), numpy_helper.to_array(w))


OPSET9 = """
    <ir_version: 4, opset_import: ["" : 9]>
    g (float[1, 4] x) => (float[1, 4] y) {
        a, m = Dropout<ratio = 0.5>(x)
        y = Softmax(a)
    }"""


def test_opset9_model_keeps_its_opset_when_no_pass_needs_more():
    result = compile(parse(OPSET9), "cpu")
    assert result.report["frontend"]["opset"] == 9 and "opset_upgraded_to" not in result.report["frontend"]
    assert result.onnx.opset_import[0].version == 9
    assert [n.op_type for n in result.onnx.graph.node] == ["Softmax"]


def test_opset9_model_is_upgraded_when_a_pass_needs_it():
    from hewn.passes import RemoveIdentity

    class NeedsOpset13(RemoveIdentity):
        min_opset = 13

    result = compile(parse(OPSET9), "cpu", passes=[NeedsOpset13()])
    assert result.report["frontend"]["opset_upgraded_to"] == 13
    assert result.onnx.opset_import[0].version == 13
    assert [n.op_type for n in result.onnx.graph.node] == ["Softmax"]
