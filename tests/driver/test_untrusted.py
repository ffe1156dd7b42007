"""Untrusted model files (issue 26): external data is read from the model's folder only, for
every tensor (If/Loop bodies and Constant nodes included) and for in-memory ModelProtos too."""

import os

import numpy as np
import onnx
import pytest

import hewn
from onnx import TensorProto, helper, numpy_helper

from hewn import compile
from hewn.cli import main
from hewn.core.errors import ConfigError, InvalidModelError
from tests.helpers import file_digest

W = np.arange(64, dtype=np.float32).reshape(8, 8) / 10


def _if_model() -> onnx.ModelProto:
    """y = If(c) then x @ W else x - W: the weight lives inside the then-branch."""
    then = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["t"])], "then", [],
                             [helper.make_tensor_value_info("t", TensorProto.FLOAT, [2, 8])],
                             [numpy_helper.from_array(W, "w")])
    other = helper.make_graph([helper.make_node("Neg", ["x"], ["e"])], "else", [],
                              [helper.make_tensor_value_info("e", TensorProto.FLOAT, [2, 8])])
    graph = helper.make_graph(
        [helper.make_node("ReduceSum", ["x"], ["s"], keepdims=0),
         helper.make_node("Greater", ["s", "zero"], ["c"]),
         helper.make_node("If", ["c"], ["y"], then_branch=then, else_branch=other)],
        "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 8])],
        [numpy_helper.from_array(np.array(0, np.float32), "zero")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)


def test_weights_inside_if_bodies_are_read_from_the_models_folder(tmp_path, monkeypatch):
    src = tmp_path / "in" / "model.onnx"
    src.parent.mkdir()
    onnx.save_model(_if_model(), str(src), save_as_external_data=True, location="ws.bin", size_threshold=0)
    decoy = tmp_path / "elsewhere"
    decoy.mkdir()
    (decoy / "ws.bin").write_bytes((src.parent / "ws.bin").read_bytes()[::-1])  # same size, other bytes
    monkeypatch.chdir(decoy)
    before = file_digest(src)
    result = compile(str(src), "cpu", output=str(tmp_path / "out.onnx"))
    x = np.ones((2, 8), np.float32)
    np.testing.assert_allclose(result.session().run(None, {"x": x})[0], x @ W, rtol=1e-5)
    import onnxruntime as ort

    saved = ort.InferenceSession(str(tmp_path / "out.onnx"), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(saved.run(None, {"x": x})[0], x @ W, rtol=1e-5)
    assert file_digest(src) == before


def _matmul_proto() -> onnx.ModelProto:
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 8])],
                              [numpy_helper.from_array(W, "w")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)


def _point_at(model: onnx.ModelProto, location: str, offset: int = 0) -> onnx.ModelProto:
    tensor = model.graph.initializer[0]
    tensor.ClearField("raw_data")
    tensor.ClearField("float_data")
    tensor.data_location = TensorProto.EXTERNAL
    for key, value in (("location", location), ("offset", str(offset)), ("length", str(W.nbytes))):
        entry = tensor.external_data.add()
        entry.key, entry.value = key, value
    return model


def test_a_modelproto_cannot_name_any_file_as_a_weight(tmp_path):
    secret = tmp_path / "secret.bin"
    secret.write_bytes(os.urandom(W.nbytes))
    model = _point_at(_matmul_proto(), str(secret))   # e.g. onnx.load_model_from_string on an upload
    with pytest.raises(InvalidModelError, match="base_dir="):
        compile(model, "cpu")
    folder = tmp_path / "uploads"
    folder.mkdir()
    with pytest.raises(InvalidModelError, match="not a path inside"):
        compile(model, "cpu", base_dir=folder)       # absolute, and outside the folder given
    with pytest.raises(InvalidModelError, match="not a path inside"):
        compile(_point_at(_matmul_proto(), "../secret.bin"), "cpu", base_dir=folder)
    (folder / "w.bin").write_bytes(W.tobytes())
    result = compile(_point_at(_matmul_proto(), "w.bin"), "cpu", base_dir=folder)
    x = np.ones((2, 8), np.float32)
    np.testing.assert_allclose(result.session().run(None, {"x": x})[0], x @ W, rtol=1e-5)
    with pytest.raises(ConfigError, match="base_dir="):
        compile(_matmul_proto(), "cpu", base_dir=tmp_path / "missing")


def _save_external(model, folder, location="w.bin"):
    folder.mkdir(exist_ok=True)
    path = folder / "model.onnx"
    (folder / location).write_bytes(W.tobytes())
    onnx.save_model(_point_at(model, location), str(path))
    return path


@pytest.mark.parametrize("location, offset, match", [
    ("w.bin", -4, "negative"),
    ("x" * 300 + ".bin", 0, "is missing"),
    ("sub/../../w.bin", 0, "not a path inside"),
])
def test_crafted_locations_are_invalid_models_not_bugs(tmp_path, location, offset, match):
    path = tmp_path / "m" / "model.onnx"
    path.parent.mkdir()
    (path.parent / "w.bin").write_bytes(W.tobytes() * 2)
    onnx.save_model(_point_at(_matmul_proto(), location, offset), str(path))
    with pytest.raises(InvalidModelError, match=match):
        compile(str(path), "cpu")
    assert main(["compile", str(path), "-o", str(tmp_path / "out.onnx")]) == 2


def test_a_constant_nodes_external_value_cannot_escape(tmp_path):
    (tmp_path / "outside.bin").write_bytes(W.tobytes())
    value = numpy_helper.from_array(W, "c")
    value.ClearField("raw_data")
    value.data_location = TensorProto.EXTERNAL
    for key, val in (("location", "../outside.bin"), ("length", str(W.nbytes))):
        entry = value.external_data.add()
        entry.key, entry.value = key, val
    graph = helper.make_graph([helper.make_node("Constant", [], ["w"], value=value),
                               helper.make_node("MatMul", ["x", "w"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 8])])
    path = tmp_path / "m" / "model.onnx"
    path.parent.mkdir()
    onnx.save_model(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8), str(path))
    with pytest.raises(InvalidModelError, match="not a path inside"):
        compile(str(path), "cpu")


def test_weights_in_two_sub_folders_of_the_models_folder(tmp_path):
    folder = tmp_path / "m"
    (folder / "a").mkdir(parents=True)
    (folder / "b").mkdir()
    two = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["t"]), helper.make_node("MatMul", ["t", "v"], ["y"])],
                            "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 8])],
                            [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 8])],
                            [numpy_helper.from_array(W, "w"), numpy_helper.from_array(W.T.copy(), "v")])
    model = helper.make_model(two, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)
    for tensor, location in zip(model.graph.initializer, ("a/w.bin", "b/v.bin")):
        (folder / location).write_bytes(numpy_helper.to_array(tensor).tobytes())
        tensor.ClearField("raw_data")
        tensor.data_location = TensorProto.EXTERNAL
        entry = tensor.external_data.add()
        entry.key, entry.value = "location", location
    onnx.save_model(model, str(folder / "model.onnx"))
    result = compile(str(folder / "model.onnx"), "cpu", output=str(tmp_path / "out.onnx"))
    x = np.ones((2, 8), np.float32)
    np.testing.assert_allclose(result.session().run(None, {"x": x})[0], x @ W @ W.T, rtol=1e-5)


def _conv_model() -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    c1 = numpy_helper.from_array(rng.standard_normal((16, 3, 3, 3)).astype(np.float32), "c1")
    c2 = numpy_helper.from_array(rng.standard_normal((8, 16, 3, 3)).astype(np.float32) / 8, "c2")
    graph = helper.make_graph([helper.make_node("Conv", ["x", "c1"], ["a"], pads=[1, 1, 1, 1]),
                               helper.make_node("Relu", ["a"], ["r"]),
                               helper.make_node("Conv", ["r", "c2"], ["y"], pads=[1, 1, 1, 1])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 8, 8])], [c1, c2])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


@pytest.mark.parametrize("kwargs", [dict(prune=0.5, quantize=False), dict(sparsity=0.8, quantize=False),
                                    dict(sparsity="2:4", quantize=False),
                                    dict(quantize=hewn.QuantizeConfig(measure_speed=False))],   # no timing: same choice
                         ids=["prune", "sparsity", "2:4", "int8"])
def test_rewriting_passes_on_an_external_data_model_match_the_inline_model(tmp_path, kwargs):
    model = _conv_model()
    inline = tmp_path / "inline.onnx"
    onnx.save_model(model, str(inline))
    ext = tmp_path / "ext" / "model.onnx"
    ext.parent.mkdir()
    onnx.save_model(model, str(ext), save_as_external_data=True, location="w.bin", size_threshold=0)
    calib = [{"x": np.random.default_rng(i).standard_normal((1, 3, 8, 8)).astype(np.float32)} for i in range(4)]
    common = dict(calib_data=calib, measure_latency=False, **kwargs)
    expected = compile(str(inline), "cpu", **common)
    got = compile(str(ext), "cpu", output=str(tmp_path / "out.onnx"), **common)
    import onnxruntime as ort

    saved = ort.InferenceSession(str(tmp_path / "out.onnx"), providers=["CPUExecutionProvider"])
    np.testing.assert_array_equal(saved.run(None, calib[0])[0], expected.session().run(None, calib[0])[0])
    assert [r["pass"] for r in got.report["passes"]] == [r["pass"] for r in expected.report["passes"]]


EVIL = "w\x1b[31m\nhewn: error: forged\r\u202e"


def _evil_model(domain: str = "") -> onnx.ModelProto:
    graph = helper.make_graph([helper.make_node("Relu", ["x" + EVIL], ["y"], name="n" + EVIL, domain=domain)], "g",
                              [helper.make_tensor_value_info("x" + EVIL, TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])])
    opsets = [helper.make_opsetid("", 13)] + ([helper.make_opsetid(domain, 1)] if domain else [])
    return helper.make_model(graph, opset_imports=opsets, ir_version=8)


def test_names_reach_the_terminal_escaped(tmp_path, capsys):
    """ESC sequences, carriage returns and newlines in crafted names are shown, never sent: an error
    stays one line and no `hewn:` line can be forged."""
    good, bad = tmp_path / "good.onnx", tmp_path / "bad.onnx"
    onnx.save(_evil_model(), str(good))
    onnx.save(_evil_model("evil.domain"), str(bad))
    assert main(["inspect", str(good)]) == 0
    assert main(["compile", str(bad), "-o", str(tmp_path / "out.onnx")]) == 2
    captured = capsys.readouterr()
    for stream in (captured.out, captured.err):
        assert "\x1b" not in stream and "\r" not in stream and "\u202e" not in stream
        assert "hewn: error: forged" not in [line.strip() for line in stream.splitlines()]
    assert len(captured.err.strip().splitlines()) == 1 and "\\x1b[31m\\x0ahewn: error: forged" in captured.err


@pytest.mark.parametrize("text", [b"nodeA", b"relu_out", b"inp", b"then_w", b"author"])
def test_names_that_are_not_utf8_are_a_corrupt_file_not_a_bug(tmp_path, capsys, text):
    """A flipped byte in a node, tensor, input, subgraph weight or metadata string: protobuf returns
    bytes for it; hewn says the file is corrupt (file and in-memory model alike), never a bug."""
    then = helper.make_graph([helper.make_node("Add", ["relu_out", "then_w"], ["t"])], "then", [],
                             [helper.make_tensor_value_info("t", TensorProto.FLOAT, [1, 4])],
                             [numpy_helper.from_array(np.ones((1, 4), np.float32), "then_w")])
    other = helper.make_graph([helper.make_node("Neg", ["relu_out"], ["e"])], "else", [],
                              [helper.make_tensor_value_info("e", TensorProto.FLOAT, [1, 4])])
    graph = helper.make_graph(
        [helper.make_node("Relu", ["inp"], ["relu_out"], name="nodeA"),
         helper.make_node("ReduceSum", ["relu_out"], ["s"], keepdims=0),
         helper.make_node("Greater", ["s", "zero"], ["c"]),
         helper.make_node("If", ["c"], ["y"], then_branch=then, else_branch=other)],
        "g", [helper.make_tensor_value_info("inp", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
        [numpy_helper.from_array(np.array(0, np.float32), "zero")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)
    helper.set_model_props(model, {"author": "x"})
    data = model.SerializeToString()
    assert data.count(text) >= 1
    broken = data.replace(text, text[:-1] + b"\xff")
    path = tmp_path / "bad.onnx"
    path.write_bytes(broken)
    with pytest.raises(InvalidModelError, match="is not valid UTF-8 text; the file is corrupt"):
        compile(onnx.load_from_string(broken))
    assert main(["compile", str(path), "-o", str(tmp_path / "out.onnx")]) == 2
    err = capsys.readouterr().err
    assert "not valid UTF-8 text" in err and "bug" not in err and len(err.strip().splitlines()) == 1


def _leaves(value, path=()):
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _leaves(v, path + (k,))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _leaves(v, path + (i,))
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        yield path


def test_every_numeric_field_of_an_edited_report_reaches_the_page_escaped(tmp_path, capsys):
    """`hewn report` re-renders report.json, which anyone may have edited: a script where a number
    belongs is shown as text, or the report is refused in one line; never markup in the page."""
    import json

    from hewn.driver.result import html_path, report_path

    src = tmp_path / "m.onnx"
    onnx.save(_conv_model(), str(src))
    out = tmp_path / "out.onnx"
    calib = [{"x": np.random.default_rng(i).standard_normal((1, 3, 8, 8)).astype(np.float32)} for i in range(4)]
    compile(str(src), "cpu", calib_data=calib, output=str(out))
    report = json.loads(report_path(out).read_text())
    paths = list(_leaves(report))
    assert len(paths) > 50
    paths = paths[::len(paths) // 30]   # every section, 30 renders (each draws the plots)
    script = "<script>alert(1)</script>"
    rendered = 0
    for path in paths:
        edited = json.loads(json.dumps(report))
        node = edited
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = script
        report_path(out).write_text(json.dumps(edited))
        code = main(["report", str(out)])
        err = capsys.readouterr().err
        if code == 0:
            rendered += 1
            assert "<script" not in html_path(out).read_text(), path
        else:
            assert code == 2 and len(err.strip().splitlines()) == 1 and "not a report hewn wrote" in err, (path, err)
    assert rendered > len(paths) // 2   # most such edits still render, as text


@pytest.mark.parametrize("external", [False, True])
@pytest.mark.parametrize("dims", [[2 ** 62, 4], [2 ** 62 + 1, 4]])
def test_dims_whose_product_overflows_are_an_invalid_model(tmp_path, external, dims):
    """int64 overflow in a weight's dims (inline or external, where it could slip past the data
    file's size check) is an invalid model, not a bug or a huge allocation. (2**62 + 1) * 4 wraps to
    4 elements in int64, exactly the 16 bytes on file: that one passed the old size check."""
    w = numpy_helper.from_array(np.ones((2, 2), np.float32), "w")
    graph = helper.make_graph([helper.make_node("Add", ["x", "w"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 2])], [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    path = tmp_path / "m.onnx"
    if external:
        onnx.save_model(model, str(path), save_as_external_data=True, location="w.bin", size_threshold=0)
        model = onnx.load(str(path), load_external_data=False)
    tensor = model.graph.initializer[0]
    del tensor.dims[:]
    tensor.dims.extend(dims)
    onnx.save_model(model, str(path))
    with pytest.raises(InvalidModelError):
        compile(str(path))
