"""Mixed precision moves activation x activation Add/Mul (HardSwish's x * Clip(x + 3), gates) back to
float as one unit before it ranks single layers: on PP-OCRv4 detection they alone cost cosine 0.885."""
from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs
import torch

import hewn


class HardSwishNet(torch.nn.Module):
    """Convs joined by HardSwish written as Paddle2ONNX writes it: x * Clip(x + 3, 0, 6) / 6."""

    def __init__(self):
        super().__init__()
        self.a, self.b, self.c = (torch.nn.Conv2d(3, 16, 3, padding=1), torch.nn.Conv2d(16, 16, 3, padding=1),
                                  torch.nn.Conv2d(16, 4, 1))

    def forward(self, x):
        def hswish(t):
            return t * torch.clamp(t + 3, 0, 6) / 6
        return self.c(hswish(self.b(hswish(self.a(x)))))


def test_elementwise_ops_are_tried_float_as_one_unit_and_kept_only_when_closer():
    torch.manual_seed(0)
    x = torch.randn(1, 3, 16, 16)
    rng = np.random.default_rng(0)
    calib = [(rng.standard_normal((1, 3, 16, 16)).astype(np.float32),) for _ in range(16)]
    result = hewn.compile(HardSwishNet().eval(), "cpu", example_inputs=(x,), calib_data=calib, measure_latency=False,
                          quantize=hewn.QuantizeConfig(measure_speed=False, budget=1e-5, force=True,
                                                       schemes=("static_u8s8",)))
    q = result.report["quantization"]
    tried = q["mixed_precision"]["elementwise_float"]
    assert tried["nodes"] == 2   # the two x * Clip(...) Muls
    assert tried["kept"] is (tried["error_after"] < tried["error_before"])
    graph = gs.import_onnx(result.onnx)
    quantized = [n for n in graph.nodes if n.op == "Mul"   # int8 Mul: DQ'd inputs, its output quantized again
                 and all(t.inputs and t.inputs[0].op == "DequantizeLinear" for t in n.inputs)
                 and any(c.op == "QuantizeLinear" for t in n.outputs for c in t.outputs)]
    assert bool(quantized) is (not tried["kept"])
