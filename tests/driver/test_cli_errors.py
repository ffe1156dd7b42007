"""Bad input at the CLI and in calibration data is one line that names what and where (exit 2),
never a traceback or a message that blames the wrong thing."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch

import hewn
from hewn.cli import main
from tests.helpers import parse

GOOD = """<ir_version: 8, opset_import: ["" : 17]>
g (float[1, 4] x) => (float[1, 4] y) { y = Relu(x) }"""


@pytest.fixture
def model_path(tmp_path):
    path = tmp_path / "m.onnx"
    onnx.save(parse(GOOD), str(path))
    return path


def _one_line_error(capsys, argv, expect: str):
    assert main([str(a) for a in argv]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("hewn: error:") and len(err.splitlines()) == 1 and expect in err, err


def test_corrupt_report_is_named_as_such(tmp_path, model_path, capsys):
    (tmp_path / "m.report.json").write_text("{not json")
    _one_line_error(capsys, ["report", model_path], "not a hewn report (not valid JSON")
    (tmp_path / "m.report.json").write_text("[1, 2]")
    _one_line_error(capsys, ["explain", model_path], "not a hewn report")


def test_bad_passes_json_and_bench_runs(tmp_path, model_path, capsys):
    _one_line_error(capsys, ["compile", model_path, "-o", tmp_path / "o.onnx", "--passes", "[bad"],
                    "--passes is not valid JSON")
    _one_line_error(capsys, ["bench", model_path, "--runs", "0"], "--runs must be at least 1")


def test_calibration_files_that_are_not_numeric_arrays(tmp_path, model_path, capsys):
    np.savez(tmp_path / "objects.npz", x=np.array([{"a": 1}], dtype=object))
    _one_line_error(capsys, ["compile", model_path, "-o", tmp_path / "o.onnx", "--calib", tmp_path / "objects.npz"],
                    "cannot read it as numeric arrays")
    (tmp_path / "corrupt.npz").write_bytes(b"PK\x03\x04 not really a zip")
    _one_line_error(capsys, ["compile", model_path, "-o", tmp_path / "o.onnx", "--calib", tmp_path / "corrupt.npz"],
                    "cannot read it as numeric arrays")


def test_sequence_inputs_are_refused_with_a_reason(tmp_path, capsys):
    path = tmp_path / "seq.onnx"
    onnx.save(parse("""<ir_version: 8, opset_import: ["" : 17]>
    g (seq(float[2]) s) => (float[2] y) { zero = Constant <value = int64 {0}> ()
                                         y = SequenceAt(s, zero) }"""), str(path))
    for argv in (["compile", path, "-o", tmp_path / "o.onnx"], ["inspect", path]):
        _one_line_error(capsys, argv, "input 's' is a sequence value")


def test_calibration_values_out_of_their_types_range_are_refused():
    model = parse("""<ir_version: 8, opset_import: ["" : 17]>
    g (int8[1, 4] x) => (float[1, 4] y) { y = Cast <to = 1> (x) }""")
    with pytest.raises(hewn.InputMismatchError, match=r"values 0\.\.300, outside the range of its type int8"):
        hewn.compile(model, example_inputs=(np.array([[0, 1, 2, 300]], dtype=np.int64),))


def test_a_calibration_source_that_raises_is_the_users_error_not_a_pass_bug():
    model = parse(GOOD)

    def batches():
        yield (np.ones((1, 4), np.float32),)
        raise OSError("disk went away")

    with pytest.raises(hewn.InputMismatchError, match="your data source raised OSError while producing sample"):
        hewn.compile(model, calib_data=batches, quantize=hewn.QuantizeConfig(measure_speed=False))


def test_bfloat16_calibration_tensors_are_accepted():
    model = parse(GOOD)
    calib = [(torch.randn(1, 4).to(torch.bfloat16),) for _ in range(4)]
    result = hewn.compile(model, calib_data=calib, quantize=False)
    assert result.report["frontend"]["verification_inputs"].startswith("4 of 4 calib_data samples")


def test_bfloat16_model_inputs_are_refused_for_what_they_are():
    from hewn.core.runtime import input_specs, seeded_inputs

    model = parse("""<ir_version: 8, opset_import: ["" : 17]>
    g (bfloat16[2, 3] x) => (float[2, 3] y) { y = Cast <to = 1> (x) }""")
    feeds = seeded_inputs(input_specs(model), 1, seed=0)
    assert feeds[0]["x"].dtype.name == "bfloat16" and float(abs(feeds[0]["x"].astype("float32")).sum()) > 0
    with pytest.raises(hewn.UnsupportedModelError, match="input 'x' is bfloat16, which ONNX Runtime's Python API"):
        hewn.compile(model)
