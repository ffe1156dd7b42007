"""Bias correction for weight quantization: the computed shift is what rounding the weights does to
the layer's mean output, and a depthwise model quantized with it lands closer to float."""
from __future__ import annotations

import numpy as np
import onnx
import torch
from onnx import helper, numpy_helper

import hewn
from hewn.core.ir import to_graph
from hewn.passes.quant.bias_correction import apply_shifts, correctable, output_shifts


def test_shift_is_the_weight_rounding_error_times_the_input_mean():
    """One depthwise Conv whose quantized weight is given: the shift is (W_q - W) E[x] per channel."""
    rng = np.random.default_rng(0)
    w = rng.standard_normal((4, 1, 3, 3)).astype(np.float32)
    scale = (np.abs(w).reshape(4, -1).max(1) / 7).astype(np.float32)   # a coarse 4-bit grid: big errors
    q = np.clip(np.round(w / scale[:, None, None, None]), -8, 7).astype(np.int8)
    float_model = _model([helper.make_node("Conv", ["x", "w"], ["y"], group=4)], [numpy_helper.from_array(w, "w")])
    quant_model = _model([helper.make_node("DequantizeLinear", ["wq", "ws", "wz"], ["wd"], axis=0),
                          helper.make_node("Conv", ["x", "wd"], ["y"], group=4)],
                         [numpy_helper.from_array(q, "wq"), numpy_helper.from_array(scale, "ws"),
                          numpy_helper.from_array(np.zeros(4, np.int8), "wz")])
    float_graph, quant_graph = to_graph(float_model), to_graph(quant_model)
    quant_graph.nodes[1].name = float_graph.nodes[0].name = "conv"
    feeds = [{"x": (rng.standard_normal((1, 4, 6, 6)) + 2.0).astype(np.float32)} for _ in range(4)]
    shifts = output_shifts(float_model, quant_graph, correctable(float_graph), feeds)
    mean = np.mean([f["x"].mean((0, 2, 3)) for f in feeds], 0)
    w_q = q.astype(np.float64) * scale[:, None, None, None]
    np.testing.assert_allclose(shifts["conv"], (w_q - w).reshape(4, -1).sum(1) * mean, rtol=1e-4, atol=1e-6)
    assert apply_shifts(float_graph, shifts) == 1


def _model(nodes, inits):
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 4, 6, 6])],
                              [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 4, 4, 4])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)


class Separable(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.expand = torch.nn.Conv2d(3, 32, 1)
        self.depthwise = torch.nn.Conv2d(32, 32, 3, padding=1, groups=32)
        self.project = torch.nn.Conv2d(32, 8, 1)

    def forward(self, x):
        return self.project(torch.relu(self.depthwise(torch.relu(self.expand(x)))))


def test_depthwise_model_quantized_closer_to_float_with_correction():
    torch.manual_seed(0)
    model = Separable().eval()
    with torch.no_grad():  # BatchNorm-folded depthwise weights: a wide spread of channel scales
        model.depthwise.weight.mul_(torch.logspace(-1, 1, 32).reshape(32, 1, 1, 1))
    rng = np.random.default_rng(0)
    calib = [(rng.standard_normal((1, 3, 16, 16)).astype(np.float32) + 1.0,) for _ in range(16)]
    errors = {}
    for corrected in (False, True):
        config = hewn.QuantizeConfig(schemes=("static_u8s8_reduced",), budget=0.5, measure_speed=False,
                                     bias_correction=corrected)
        result = hewn.compile(model, "cpu", example_inputs=(torch.from_numpy(calib[0][0]),), calib_data=calib,
                              quantize=config, measure_latency=False)
        errors[corrected] = result.report["verification"]["error"]
        if corrected:
            assert result.report["quantization"]["plan"].get("bias_corrected", 0) >= 1
    assert errors[True] < errors[False]
