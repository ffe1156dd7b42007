"""Bad input gets a specific HewnError; the input is untouched; no output file is left behind."""
import hashlib

import numpy as np
import onnx
import pytest
from onnx import helper

from compiler import compile
from compiler.cli import main
from compiler.errors import (ConfigError, InputMismatchError, InvalidModelError,
                             UnsupportedModelError)
from tests.helpers import parse

GOOD = """
<ir_version: 8, opset_import: ["" : 13]>
g (float[N, 4] x) => (float[N, 4] y) {
    a = Identity(x)
    y = Relu(a)
}"""


def _digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _expect(path, out, error, match):
    before = _digest(path)
    with pytest.raises(error, match=match):
        compile(str(path), "cpu", output=str(out))
    assert _digest(path) == before
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
    before = _digest(path)
    with pytest.raises(ConfigError, match="refusing to overwrite the input model"):
        compile(str(path), output=str(path))
    assert _digest(path) == before


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
    old = parse(GOOD.replace('"" : 13', '"" : 7'))
    with pytest.raises(UnsupportedModelError, match="opset 7 is older than 9"):
        compile(old)
    new = parse(GOOD.replace('"" : 13', '"" : 21').replace("ir_version: 8", "ir_version: 10"))
    with pytest.raises(UnsupportedModelError, match="newer than target 'mobile' supports"):
        compile(new, "mobile")
