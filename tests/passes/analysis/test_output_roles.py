"""Top-1 agreement judges class scores only (issue 27): an embedding's argmax means nothing, and
judging all-MiniLM's pooled [1, 384] output by it kept int8 off a model it fits."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import hewn
from hewn.passes.analysis.output_roles import class_outputs


def _head(output: str, width: int = 384, softmax: bool = False, seed: int = 0) -> onnx.ModelProto:
    """x [1, 64] -> Gemm -> Relu -> Gemm -> `output` [1, width] (optionally through Softmax)."""
    rng = np.random.default_rng(seed)
    w1 = numpy_helper.from_array((rng.standard_normal((64, 128)) / 8).astype(np.float32), "w1")
    w2 = numpy_helper.from_array((rng.standard_normal((128, width)) / 11).astype(np.float32), "w2")
    last = "z" if softmax else output
    nodes = [helper.make_node("Gemm", ["x", "w1"], ["h"], name="fc1"), helper.make_node("Relu", ["h"], ["r"]),
             helper.make_node("Gemm", ["r", "w2"], [last], name="fc2")]
    if softmax:
        nodes.append(helper.make_node("Softmax", ["z"], [output], axis=-1))
    graph = helper.make_graph(nodes, "head", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 64])],
                              [helper.make_tensor_value_info(output, TensorProto.FLOAT, [1, width])], [w1, w2])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


@pytest.mark.parametrize("output,softmax,metric,judged", [
    ("sentence_embedding", False, None, False),
    ("features", False, None, False),
    ("logits", False, None, True),          # named like class scores
    ("out", True, None, True),              # produced by Softmax
    ("out", False, "top1", True),           # the user said classification
    ("logits", False, "cosine", False),     # the user said it is not
])
def test_only_evident_class_scores_are_judged_by_top1(output, softmax, metric, judged):
    assert bool(class_outputs(_head(output, softmax=softmax), metric)) is judged


def test_a_rank3_output_is_not_judged_by_top1_whatever_its_name():
    model = _head("logits")
    model.graph.output[0].type.tensor_type.shape.dim.add().dim_value = 1
    assert class_outputs(model) == {}


def _calib(count: int = 64):
    rng = np.random.default_rng(1)
    return [{"x": rng.standard_normal((1, 64)).astype(np.float32)} for _ in range(count)]


def test_an_embedding_output_is_never_judged_by_top1_agreement(tmp_path):
    model = _head("sentence_embedding")
    result = hewn.compile(model, "cpu", calib_data=_calib(),
                          quantize=hewn.QuantizeConfig(measure_speed=False, bias_correction=False))
    report = result.report
    assert "quantize" in report["verification"]["lossy_passes"], report["quantization"]
    assert "top1_agreement" not in report["verification"]
    assert all("top1_agreement" not in c for c in report["quantization"]["candidates"])
    assert report["quality"]["metric"] == "output error"
    assert "no output is evidently class scores" in report["quality"]["judged_by"]
    # the argmax over the 384 dims does flip (the old rule would have refused int8 for it)
    import onnxruntime as ort
    ref = ort.InferenceSession(model.SerializeToString())
    got = result.session()
    flips = [ref.run(None, f)[0].argmax() != got.run(None, f)[0].argmax() for f in _calib(200)]
    assert np.mean(flips) > 0.01, np.mean(flips)


def test_class_scores_are_judged_by_top1_and_the_report_says_why():
    result = hewn.compile(_head("logits", width=10), "cpu", calib_data=_calib(),
                          quantize=hewn.QuantizeConfig(measure_speed=False))
    q = result.report["quality"]
    assert "top1_agreement" in result.report["verification"]
    assert q["metric"] == "top1" and "named like class scores" in q["judged_by"]
    assert q["samples"] == 32 and "held-out" in q["words"] and "95% interval" in q["words"]


def test_verification_holds_samples_out_of_calibration():
    result = hewn.compile(_head("logits", width=10), "cpu", calib_data=_calib(64),
                          quantize=hewn.QuantizeConfig(measure_speed=False))
    report = result.report
    assert report["verification"]["samples"] == 32 and report["verification"]["held_out"]
    assert report["quantization"]["plan"]["calibration"]["samples"] == 32   # calibration saw only the other half
    assert "held out: calibration uses the other 32" in report["quality"]["inputs"]


def test_a_small_calib_data_is_not_called_held_out():
    result = hewn.compile(_head("logits", width=10), "cpu", calib_data=_calib(16),
                          quantize=hewn.QuantizeConfig(measure_speed=False))
    report = result.report
    assert not report["verification"]["held_out"]
    assert "not held out" in report["quality"]["inputs"]
    assert report["quantization"]["plan"]["calibration"]["samples"] == 16
