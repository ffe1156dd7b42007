"""The torch frontend (issue 26, class 8): the user's tensors are never changed by a compile, and a
module that cannot be one ONNX graph is refused for its real cause, not blamed on the exporter."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import hewn
from hewn.core.errors import InputMismatchError, InvalidModelError, TraceError

X = torch.tensor([[-1.0, 0.5, 2.0, 3.0]])


class Clamp(torch.nn.Module):
    def forward(self, x):
        x.clamp_(0, 1)
        return x * 2


class AddInPlace(torch.nn.Module):   # not idempotent: a second call on the same tensor differs
    def forward(self, x):
        x.add_(1)
        return x * 2


@pytest.mark.parametrize("module", [Clamp(), AddInPlace()], ids=["clamp_", "add_"])
def test_an_in_place_forward_neither_changes_the_callers_tensor_nor_fails(module):
    x = X.clone()
    calib = [np.array([[0.2, -3.0, 1.5, 0.7]], np.float32)]
    kept = calib[0].copy()
    result = hewn.compile(module, example_inputs=(x,), calib_data=calib, measure_latency=False)
    assert torch.equal(x, X)                    # the caller's tensor is as it was
    np.testing.assert_array_equal(calib[0], kept)
    y = result.session().run(None, {result.onnx.graph.input[0].name: X.numpy()})[0]
    np.testing.assert_allclose(y, type(module)()(X.clone()).numpy(), rtol=1e-6)


class Noisy(torch.nn.Module):
    def forward(self, x):
        return x + torch.rand_like(x)


class Counter(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.register_buffer("calls", torch.zeros(1))

    def forward(self, x):
        self.calls += 1
        return x * self.calls


@pytest.mark.parametrize("module", [Noisy(), Counter()], ids=["rand", "state"])
def test_randomness_and_state_are_named_as_the_cause(module):
    with pytest.raises(TraceError, match="different outputs when run twice on the same example_inputs"):
        hewn.compile(module, example_inputs=(X.clone(),), measure_latency=False)


def test_a_torch_compiled_module_compiles_as_its_original():
    torch.manual_seed(0)
    lin = torch.nn.Linear(4, 3).eval()
    result = hewn.compile(torch.compile(lin), example_inputs=(X.clone(),), measure_latency=False)
    assert "torch_compile" in result.report["frontend"]
    y = result.session().run(None, {result.onnx.graph.input[0].name: X.numpy()})[0]
    np.testing.assert_allclose(y, lin(X).detach().numpy(), rtol=1e-5, atol=1e-6)


def test_meta_tensors_are_refused_as_inputs_not_bugs():
    with torch.device("meta"):
        empty = torch.nn.Linear(4, 3)
    with pytest.raises(InvalidModelError, match="'meta' device"):
        hewn.compile(empty, example_inputs=(X.clone(),))
    with pytest.raises(InputMismatchError, match="'meta' device"):
        hewn.compile(torch.nn.Linear(4, 3), example_inputs=(torch.empty(1, 4, device="meta"),))
