"""forward(x, scale=None) called with example_inputs=(x,): the unused optional argument is bound to
its default (it was traced as a proxy, took the `scale is not None` branch, and failed in the
exporter with a misleading error after a raw fx traceback)."""
from __future__ import annotations

import numpy as np
import torch

import hewn


class Scaled(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(8, 4)

    def forward(self, x, scale=None, shift: float = 0.0):
        y = self.fc(x)
        if scale is not None:
            y = y * scale
        return y + shift


def test_unused_optional_arguments_are_bound_to_their_defaults():
    torch.manual_seed(0)
    model, x = Scaled().eval(), torch.randn(2, 8)
    result = hewn.compile(model, example_inputs=(x,))
    assert result.report["frontend"]["capture"] == "torch.fx.symbolic_trace"
    got = result.session().run(None, {"x": x.numpy()})[0]
    np.testing.assert_allclose(got, model(x).detach().numpy(), rtol=1e-5, atol=1e-6)
    assert [i.name for i in result.onnx.graph.input] == ["x"]
