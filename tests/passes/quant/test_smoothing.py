"""Dynamic int8 tries SmoothQuant'ed weights and keeps them only when they measure closer to float."""
from __future__ import annotations

import numpy as np
from onnx import TensorProto, helper, numpy_helper

import hewn


def _block(outliers: bool):
    """x -> LayerNorm (a few channels' gamma 40x: the outliers of a transformer's LN output) -> MatMul."""
    rng = np.random.default_rng(0)
    gamma = np.ones(64, np.float32)
    if outliers:
        gamma[[3, 17, 40]] = 40.0
    inits = [numpy_helper.from_array(gamma, "g"), numpy_helper.from_array(np.zeros(64, np.float32), "b"),
             numpy_helper.from_array((rng.standard_normal((64, 64)) / 8).astype(np.float32), "w")]
    nodes = [helper.make_node("LayerNormalization", ["x", "g", "b"], ["h"], axis=-1),
             helper.make_node("MatMul", ["h", "w"], ["y"])]
    graph = helper.make_graph(nodes, "block", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 16, 64])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 16, 64])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def _compile(model, smooth: bool):
    rng = np.random.default_rng(1)
    calib = [{"x": rng.standard_normal((1, 16, 64)).astype(np.float32)} for _ in range(16)]
    return hewn.compile(model, "cpu", calib_data=calib, measure_latency=False,
                        quantize=hewn.QuantizeConfig(schemes=("dynamic_u8s8",), measure_speed=False, force=True,
                                                     smooth=smooth))


def test_outlier_channels_are_smoothed_and_the_error_falls():
    smoothed, plain = _compile(_block(True), True), _compile(_block(True), False)
    q = smoothed.report["quantization"]
    assert q["plan"]["smooth_quant"]["alpha"] in (0.5, 0.7, 0.85)
    assert "smooth_quant" not in plain.report["quantization"]["plan"]
    assert q["chosen"]["error"] < 0.5 * plain.report["quantization"]["chosen"]["error"]
    assert smoothed.report["verification"]["error"] < plain.report["verification"]["error"]


def test_smoothing_that_does_not_help_is_not_kept():
    q = _compile(_block(False), True).report["quantization"]
    plain = _compile(_block(False), False).report["quantization"]
    assert q["chosen"]["error"] <= plain["chosen"]["error"]
    if "smooth_quant" in q["plan"]:   # kept only because it measured closer to float
        assert q["chosen"]["error"] < plain["chosen"]["error"]


def test_smoothing_not_needed_for_the_budget_is_dropped_when_it_measures_slower(monkeypatch):
    """Timed against each other (faked here): smoothing that adds run-time Muls and is not needed
    for the budget goes; when it does not cost time, the more accurate model stays."""
    from hewn.passes.quant import quantize

    rng = np.random.default_rng(1)
    calib = [{"x": rng.standard_normal((1, 16, 64)).astype(np.float32)} for _ in range(16)]
    for slower, kept in ((1.5, False), (1.0, True)):
        monkeypatch.setattr(quantize._Bench, "against", lambda self, a, b, runs=0, s=slower: s)
        q = hewn.compile(_block(True), "cpu", calib_data=calib, measure_latency=False,
                         quantize=hewn.QuantizeConfig(schemes=("dynamic_u8s8",), force=True, budget=0.5)
                         ).report["quantization"]
        assert q["plan"]["smooth_quant"].get("kept", True) is kept, q["plan"]["smooth_quant"]
