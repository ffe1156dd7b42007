import numpy as np
import pytest
import torch

from hewn import compile
from hewn.core.errors import InputMismatchError, TraceError
from hewn.models import REFERENCE_MODELS


class DataDependent(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.inner = Branchy()

    def forward(self, x):
        return self.inner(x)


class Branchy(torch.nn.Module):
    def forward(self, x):
        if x.sum() > 0:  # data-dependent control flow: neither fx nor torch.export can capture it
            return x * 2
        return x - 1


def test_module_compiles_and_matches_torch():
    model, inputs = REFERENCE_MODELS["resnet20"]()
    result = compile(model, "cpu", example_inputs=inputs)
    got = result.session().run(None, {"x": inputs[0].numpy()})[0]
    np.testing.assert_allclose(got, model(*inputs).detach().numpy(), rtol=1e-4, atol=1e-5)
    assert result.report["frontend"]["capture"] == "torch.fx.symbolic_trace"
    assert result.report["after"]["ops"].get("BatchNormalization", 0) == 0


def test_user_module_is_not_modified():
    model, inputs = REFERENCE_MODELS["mlp"]()
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    compile(model, "cpu", example_inputs=inputs)
    assert model.training
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key


def test_untraceable_module_names_the_module_and_the_cause():
    with pytest.raises(TraceError, match=r"in module 'inner' \(Branchy.forward.*control flow"):
        compile(DataDependent(), "cpu", example_inputs=(torch.randn(2, 3),))


def test_wrong_or_missing_example_inputs():
    model, _ = REFERENCE_MODELS["resnet20"]()
    with pytest.raises(InputMismatchError, match="needs example_inputs"):
        compile(model, "cpu")
    with pytest.raises(InputMismatchError, match=r"forward failed on example_inputs \[x \(1, 5, 32, 32\)"):
        compile(model, "cpu", example_inputs=(torch.randn(1, 5, 32, 32),))
    with pytest.raises(InputMismatchError, match="not a torch.Tensor"):
        compile(model, "cpu", example_inputs=([1, 2, 3],))
