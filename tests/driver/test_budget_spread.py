"""Budgets are judged on a spread of all the user's samples (issue 26, class 4): folder datasets
come sorted by class, and a budget judged on the first samples passed plans that destroy the
classes after them."""
from __future__ import annotations

import numpy as np
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

import hewn


def _two_class_model():
    """Hidden units 0-7 carry class 0, units 8-15 class 1 (each class sets half of x)."""
    rng = np.random.default_rng(0)
    w1 = np.eye(16, dtype=np.float32) * 2 + rng.standard_normal((16, 16)).astype(np.float32) * 0.01
    w2 = rng.standard_normal((16, 4)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w1"], ["h"]), helper.make_node("Relu", ["h"], ["r"]),
         helper.make_node("MatMul", ["r", "w2"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
        [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(w2, "w2")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def _sample(rng, cls):
    x = np.zeros((1, 16), np.float32)
    x[0, 8 * cls:8 * cls + 8] = np.abs(rng.standard_normal(8)) + 0.5
    return {"x": x}


def test_the_planner_budget_holds_for_the_class_at_the_end_of_sorted_data():
    rng = np.random.default_rng(1)
    calib = [_sample(rng, 0) for _ in range(48)] + [_sample(rng, 1) for _ in range(16)]
    model = _two_class_model()
    result = hewn.compile(model, "cpu", calib_data=calib, accuracy_budget=0.05, quantize=False,
                          measure_latency=False)
    original = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    compiled = result.session()
    worst = 0.0
    for sample in calib[48:]:     # the second class, which a prefix never showed the planner
        a, b = original.run(None, sample)[0].ravel(), compiled.run(None, sample)[0].ravel()
        worst = max(worst, 1 - float(a @ b / np.linalg.norm(a) / np.linalg.norm(b)))
    assert worst <= 0.05, worst
    final = result.report["plan"]["final"]
    assert "not held out" in final["inputs"]   # the verification samples are calibration samples
    assert "of 64 calib_data samples, spread over all" in result.report["frontend"]["verification_inputs"]


def test_spread_draws_from_the_whole_stream_in_order_and_holds_only_what_it_keeps():
    from hewn.core.runtime import spread

    chosen, total = spread(iter(range(1000)), 8)
    assert total == 1000 and len(chosen) == 8 and chosen == sorted(chosen)
    assert chosen[-1] >= 500 and chosen[0] < 500           # not a prefix
    assert spread(iter(range(1000)), 8) == (chosen, total)  # seeded: the same every run
    assert spread(iter(range(3)), 8) == ([0, 1, 2], 3)
