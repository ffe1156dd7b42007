"""Bad input gets a specific HewnError; the input is untouched; no output file is left behind."""

import numpy as np
import onnx
import pytest
from onnx import helper

from hewn import compile
from hewn.cli import main
from hewn.core.errors import ConfigError, InputMismatchError, InvalidModelError, UnsupportedModelError
from tests.helpers import file_digest, parse

GOOD = """
<ir_version: 8, opset_import: ["" : 13]>
g (float[N, 4] x) => (float[N, 4] y) {
    a = Identity(x)
    y = Relu(a)
}"""


def _expect(path, out, error, match):
    before = file_digest(path)
    with pytest.raises(error, match=match):
        compile(str(path), "cpu", output=str(out))
    assert file_digest(path) == before
    assert not out.exists()
    assert sorted(p.name for p in out.parent.iterdir()) == sorted([path.name])
    assert main(["compile", str(path), "-o", str(out)]) == 2
    assert not out.exists()


def test_non_onnx_bytes(tmp_path):
    path = tmp_path / "model.onnx"
    path.write_bytes(b"\x89PNG\r\n\x1a\n this is a picture, not a model")
    _expect(path, tmp_path / "out.onnx", InvalidModelError, "not a readable ONNX model|not an ONNX model")


def test_truncated_onnx(tmp_path):
    data = parse(GOOD).SerializeToString()
    path = tmp_path / "model.onnx"
    path.write_bytes(data[: len(data) // 2])
    _expect(path, tmp_path / "out.onnx", InvalidModelError, "model.onnx")


def test_unknown_domain_names_the_node(tmp_path):
    model = parse(GOOD)
    model.graph.node.append(helper.make_node("FancyOp", ["y"], ["z"], name="fancy_1", domain="com.example"))
    model.opset_import.append(helper.make_opsetid("com.example", 1))
    path = tmp_path / "model.onnx"
    onnx.save(model, str(path))
    _expect(path, tmp_path / "out.onnx", UnsupportedModelError, "fancy_1.*FancyOp.*com.example")


def test_missing_file_and_output_over_input(tmp_path):
    with pytest.raises(InvalidModelError, match="no such file"):
        compile(str(tmp_path / "nope.onnx"))
    path = tmp_path / "model.onnx"
    onnx.save(parse(GOOD), str(path))
    before = file_digest(path)
    with pytest.raises(ConfigError, match="refusing to overwrite the input model"):
        compile(str(path), output=str(path))
    assert file_digest(path) == before


def test_model_proto_is_not_modified():
    model = parse(GOOD)
    before = model.SerializeToString()
    result = compile(model, "cpu")
    assert model.SerializeToString() == before
    assert [n.op_type for n in result.onnx.graph.node] == ["Relu"]


def test_bad_arguments():
    model = parse(GOOD)
    with pytest.raises(ConfigError, match="valid targets: cpu, cuda, mobile"):
        compile(model, "tpu")
    with pytest.raises(ConfigError, match="quantize= needs calib_data="):
        compile(model, quantize=True)
    with pytest.raises(ConfigError, match="train_data= fine-tunes a torch model"):
        compile(model, train_data=[1], accuracy_budget=0.01)
    with pytest.raises(ConfigError, match=r"prune amount must be in \[0, 1\)"):
        compile(model, prune=1.0)
    with pytest.raises(ConfigError, match="unknown pass 'fold_everything'"):
        compile(model, passes=["fold_everything"])
    with pytest.raises(ConfigError, match="has no option"):
        compile(model, passes=[("fold_constants", {"nonsense": 1})])


def test_calib_data_of_wrong_shape_or_name():
    model = parse(GOOD)
    with pytest.raises(InputMismatchError, match="input 'x' has rank 1"):
        compile(model, calib_data=[(np.zeros(4, np.float32),)])
    with pytest.raises(InputMismatchError, match=r"input names \['z'\] are not model inputs"):
        compile(model, calib_data=[{"z": np.zeros((1, 4), np.float32)}])
    with pytest.raises(InputMismatchError, match="calib_data is empty"):
        compile(model, calib_data=[])


def test_opset_too_old_and_too_new():
    ancient = GOOD.replace('"" : 13', '"" : 6').replace("ir_version: 8", "ir_version: 3")
    with pytest.raises(UnsupportedModelError, match="opset 6 is older than 7, the oldest ONNX Runtime runs"):
        compile(onnx.parser.parse_model(ancient))
    old = compile(parse(GOOD.replace('"" : 13', '"" : 7')))   # upgraded for the user, verified at once
    assert old.report["frontend"]["opset_upgraded_to"] == 9 and old.report["verification"]["passed"]
    new = parse(GOOD.replace('"" : 13', '"" : 21').replace("ir_version: 8", "ir_version: 10"))
    with pytest.raises(UnsupportedModelError, match="newer than target 'mobile' supports"):
        compile(new, "mobile")


# ---- the corpus: each malformed model gets a specific error; the input file is unchanged ----

def _save(tmp_path, model, check=False):
    if check:
        onnx.checker.check_model(model)
    path = tmp_path / "model.onnx"
    onnx.save(model, str(path))
    return path


def _model(nodes, inputs, outputs, inits=(), opset=17):
    return helper.make_model(helper.make_graph(nodes, "g", inputs, outputs, list(inits)),
                             opset_imports=[helper.make_opsetid("", opset)], ir_version=8)


def _vi(name, shape=(1, 4), dtype=onnx.TensorProto.FLOAT):
    return helper.make_tensor_value_info(name, dtype, list(shape))


def test_cycle_is_named(tmp_path):
    model = _model([helper.make_node("Add", ["x", "b"], ["a"], name="first"),
                    helper.make_node("Relu", ["a"], ["b"], name="second"),
                    helper.make_node("Identity", ["b"], ["y"], name="out")], [_vi("x")], [_vi("y")])
    _expect(_save(tmp_path, model), tmp_path / "out.onnx", InvalidModelError,
            "has a cycle through node.*'first', 'second'.*must be acyclic")


def test_dangling_input_is_named(tmp_path):
    model = _model([helper.make_node("Add", ["x", "ghost"], ["y"], name="add_1")], [_vi("x")], [_vi("y")])
    _expect(_save(tmp_path, model), tmp_path / "out.onnx", InvalidModelError,
            "node 'add_1' reads tensor 'ghost', which no node produces")


def test_tensor_produced_twice(tmp_path):
    model = _model([helper.make_node("Relu", ["x"], ["a"], name="r1"), helper.make_node("Neg", ["x"], ["a"], name="r2"),
                    helper.make_node("Identity", ["a"], ["y"])], [_vi("x")], [_vi("y")])
    _expect(_save(tmp_path, model), tmp_path / "out.onnx", InvalidModelError,
            "tensor 'a' is produced by two nodes \\('r1' and 'r2'\\)")


def test_duplicate_node_names_and_unsorted_nodes_are_handled(tmp_path):
    """Both are legal enough for ORT; hewn sorts and renames in its own copy and compiles."""
    model = _model([helper.make_node("Sigmoid", ["a"], ["y"], name="n"), helper.make_node("Relu", ["x"], ["a"], name="n")],
                   [_vi("x")], [_vi("y")])
    path = _save(tmp_path, model)
    before = file_digest(path)
    result = compile(str(path), output=str(tmp_path / "out.onnx"))
    assert [n.op_type for n in result.onnx.graph.node] == ["Relu", "Sigmoid"]
    assert len({n.name for n in result.onnx.graph.node}) == 2
    assert result.report["verification"]["passed"] and file_digest(path) == before


def test_empty_graph(tmp_path):
    model = _model([], [_vi("x")], [_vi("x")])
    _expect(_save(tmp_path, model), tmp_path / "out.onnx", InvalidModelError, "the graph has no nodes")


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_nan_or_inf_weights(tmp_path, bad):
    w = np.ones((4, 4), np.float32)
    w[1, 2] = bad
    model = _model([helper.make_node("MatMul", ["x", "w"], ["y"], name="fc")], [_vi("x")], [_vi("y")],
                   [onnx.numpy_helper.from_array(w, "w")])
    what = "1 NaN" if np.isnan(bad) else "1 infinite"
    _expect(_save(tmp_path, model), tmp_path / "out.onnx", InvalidModelError,
            f"weight 'w' \\(read by 'fc'\\) holds {what} value.*diverged")


def test_infinite_mask_constant_is_fine():
    """-inf in a mask added before Softmax is how attention masks are written: not an error."""
    mask = np.array([[0, -np.inf, 0, 0]], np.float32)
    model = _model([helper.make_node("Add", ["x", "mask"], ["m"]), helper.make_node("Softmax", ["m"], ["y"])],
                   [_vi("x")], [_vi("y")], [onnx.numpy_helper.from_array(mask, "mask")])
    assert compile(model).report["verification"]["passed"]


def test_missing_or_short_external_data(tmp_path):
    w = onnx.numpy_helper.from_array(np.ones((64, 64), np.float32), "w")
    model = _model([helper.make_node("MatMul", ["x", "w"], ["y"])], [_vi("x", (1, 64))], [_vi("y", (1, 64))], [w])
    path = tmp_path / "model.onnx"
    onnx.save_model(model, str(path), save_as_external_data=True, location="weights.bin", size_threshold=0)
    data = tmp_path / "weights.bin"
    data.write_bytes(data.read_bytes()[:1000])  # truncated
    _expect_files(path, tmp_path / "out.onnx", "needs bytes 0..16384 of .*weights.bin, but that file holds 1000 bytes")
    data.unlink()
    _expect_files(path, tmp_path / "out.onnx", "weights.bin, but that file is missing")


def test_external_data_outside_the_model_folder(tmp_path):
    w = onnx.numpy_helper.from_array(np.ones((64, 64), np.float32), "w")
    model = _model([helper.make_node("MatMul", ["x", "w"], ["y"])], [_vi("x", (1, 64))], [_vi("y", (1, 64))], [w])
    (tmp_path / "m").mkdir()
    path = tmp_path / "m" / "model.onnx"
    onnx.save_model(model, str(path), save_as_external_data=True, location="weights.bin", size_threshold=0)
    stored = onnx.load(str(path), load_external_data=False)
    stored.graph.initializer[0].external_data[0].value = "../../etc/passwd"
    onnx.save(stored, str(path))
    _expect_files(path, tmp_path / "m" / "out.onnx", "names its data file '../../etc/passwd'.*not a path inside")


def test_model_proto_with_unresolvable_external_data(tmp_path):
    w = onnx.numpy_helper.from_array(np.ones((64, 64), np.float32), "w")
    model = _model([helper.make_node("MatMul", ["x", "w"], ["y"])], [_vi("x", (1, 64))], [_vi("y", (1, 64))], [w])
    onnx.save_model(model, str(tmp_path / "model.onnx"), save_as_external_data=True, location="w.bin", size_threshold=0)
    proto = onnx.load(str(tmp_path / "model.onnx"), load_external_data=False)
    with pytest.raises(InvalidModelError, match="in a folder hewn will not guess; pass base_dir="):
        compile(proto)
    assert compile(proto, base_dir=tmp_path).report["verification"]["passed"]


def _expect_files(path, out, match):
    """_expect for a model with a data file: every file in its folder keeps its bytes."""
    folder = path.parent
    before = {p.name: file_digest(p) for p in folder.iterdir()}
    with pytest.raises(InvalidModelError, match=match):
        compile(str(path), "cpu", output=str(out))
    assert {p.name: file_digest(p) for p in folder.iterdir()} == before


# ---- inputs that are valid and must come through intact ----

def _roundtrip(tmp_path, model, feeds):
    path = _save(tmp_path, model, check=True)
    before = file_digest(path)
    result = compile(str(path), output=str(tmp_path / "out.onnx"))
    assert file_digest(path) == before
    import onnxruntime as ort

    want = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feeds)
    got = ort.InferenceSession(str(tmp_path / "out.onnx"), providers=["CPUExecutionProvider"]).run(None, feeds)
    assert [o.name for o in result.onnx.graph.output] == [o.name for o in model.graph.output]
    for w, g in zip(want, got):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6)
    return result


def test_control_flow_is_left_intact_and_still_computes_the_same(tmp_path):
    then_g = helper.make_graph([helper.make_node("Relu", ["a"], ["t"])], "then", [], [_vi("t", (2, 4))])
    else_g = helper.make_graph([helper.make_node("Neg", ["a"], ["e"])], "else", [], [_vi("e", (2, 4))])
    body = helper.make_graph(
        [helper.make_node("Identity", ["cond_in"], ["cond_out"]), helper.make_node("Add", ["v_in", "one"], ["v_out"]),
         helper.make_node("Identity", ["v_out"], ["scan_out"])], "body",
        [_vi("i", (), onnx.TensorProto.INT64), _vi("cond_in", (), onnx.TensorProto.BOOL), _vi("v_in", (2, 4))],
        [_vi("cond_out", (), onnx.TensorProto.BOOL), _vi("v_out", (2, 4)), _vi("scan_out", (2, 4))])
    scan_body = helper.make_graph([helper.make_node("Add", ["s_in", "row"], ["s_out"]),
                                   helper.make_node("Identity", ["s_out"], ["s_each"])], "scan_body",
                                  [_vi("s_in", (4,)), _vi("row", (4,))], [_vi("s_out", (4,)), _vi("s_each", (4,))])
    model = _model(
        [helper.make_node("Identity", ["x"], ["a"]), helper.make_node("ReduceSum", ["x"], ["s"], keepdims=0),
         helper.make_node("Greater", ["s", "zero"], ["c"]),
         helper.make_node("If", ["c"], ["branch"], then_branch=then_g, else_branch=else_g),
         helper.make_node("Loop", ["trip", "true", "branch"], ["looped", "steps"], body=body),
         helper.make_node("Scan", ["init", "looped"], ["total", "partial"], body=scan_body, num_scan_inputs=1)],
        [_vi("x", (2, 4))], [_vi("looped", (2, 4)), _vi("steps", (3, 2, 4)), _vi("total", (4,))],
        [onnx.numpy_helper.from_array(np.array(0, np.float32), "zero"),
         onnx.numpy_helper.from_array(np.array(3, np.int64), "trip"),
         onnx.numpy_helper.from_array(np.array(True), "true"),
         onnx.numpy_helper.from_array(np.ones((2, 4), np.float32), "one"),
         onnx.numpy_helper.from_array(np.zeros(4, np.float32), "init")])
    for sign in (1, -1):  # both branches of the If
        x = sign * np.abs(np.random.default_rng(0).standard_normal((2, 4))).astype(np.float32)
        result = _roundtrip(tmp_path, model, {"x": x})
    ops = [n.op_type for n in result.onnx.graph.node]
    assert {"If", "Loop", "Scan"} <= set(ops) and "Identity" not in ops


def test_symbolic_batch_and_int64_token_ids(tmp_path):
    """Token ids index a 10-row embedding: the seeded verification inputs must stay below 10."""
    emb = onnx.numpy_helper.from_array(np.random.default_rng(0).standard_normal((10, 4)).astype(np.float32), "emb")
    model = _model([helper.make_node("Gather", ["emb", "ids"], ["e"]), helper.make_node("Identity", ["e"], ["i"]),
                    helper.make_node("Relu", ["i"], ["y"])],
                   [_vi("ids", ("batch", "seq"), onnx.TensorProto.INT64)], [_vi("y", ("batch", "seq", 4))], [emb])
    result = _roundtrip(tmp_path, model, {"ids": np.array([[1, 9, 0], [3, 3, 7]], np.int64)})
    dims = result.onnx.graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_param for d in dims] == ["batch", "seq"]


def test_multiple_outputs_keep_names_and_order(tmp_path):
    model = _model([helper.make_node("Relu", ["x"], ["r"]), helper.make_node("Identity", ["r"], ["first"]),
                    helper.make_node("Neg", ["x"], ["second"]), helper.make_node("Sigmoid", ["r"], ["third"])],
                   [_vi("x")], [_vi("third"), _vi("first"), _vi("second")])
    _roundtrip(tmp_path, model, {"x": np.random.default_rng(0).standard_normal((1, 4)).astype(np.float32)})
