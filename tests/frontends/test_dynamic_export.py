"""Torch exports as users need them: dynamic batch by default (checked at a second size), a
dim that cannot be dynamic exported static with the reason, dict inputs, the dynamo exporter as
the fallback, and nothing printed to the terminal by the exporters."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import hewn


class SmallCNN(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.fc = torch.nn.Linear(8, 4)

    def forward(self, x):
        y = torch.relu(self.conv(x)).mean((2, 3))
        return self.fc(y.reshape(y.shape[0], -1))


class BakedBatch(SmallCNN):
    def forward(self, x):
        return self.fc(torch.relu(self.conv(x)).mean((2, 3)).reshape(1, -1))  # batch 1 baked in


class TwoInputs(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(8, 4)

    def forward(self, features, bias=None, scale=2.0):
        out = self.fc(features) * scale
        return out if bias is None else out + bias


class Diff(torch.nn.Module):
    """torch.diff has no TorchScript-exporter conversion at opset 17 (aten::diff)."""

    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(8, 8)

    def forward(self, x):
        return torch.diff(self.fc(x), dim=-1) * 2


def _run(result, **feeds):
    return result.session().run(None, {k: v.numpy() for k, v in feeds.items()})[0]


def test_cnn_compiled_at_batch_1_runs_at_batch_4():
    torch.manual_seed(0)
    model = SmallCNN().eval()
    result = hewn.compile(model, "cpu", example_inputs=(torch.randn(1, 3, 16, 16),), measure_latency=False)
    assert result.report["frontend"]["dynamic_dims"] == {"x": {0: "batch"}}
    for batch in (1, 4):
        x = torch.randn(batch, 3, 16, 16)
        np.testing.assert_allclose(_run(result, x=x), model(x).detach().numpy(), rtol=1e-4, atol=1e-5)


def test_batch_baked_into_the_model_is_exported_static_with_the_reason():
    torch.manual_seed(0)
    result = hewn.compile(BakedBatch().eval(), "cpu", example_inputs=(torch.randn(1, 3, 16, 16),),
                          measure_latency=False)
    frontend = result.report["frontend"]
    assert frontend["dynamic_dims"] == {}
    assert "at another size" in frontend["export_check"]["dynamic_dims_refused"]
    assert [d.dim_value for d in result.onnx.graph.input[0].type.tensor_type.shape.dim] == [1, 3, 16, 16]


def test_explicit_dynamic_dims_that_do_not_hold_are_an_error():
    with pytest.raises(hewn.VerificationError, match="dynamic_shapes="):
        hewn.compile(BakedBatch().eval(), "cpu", example_inputs=(torch.randn(1, 3, 16, 16),),
                     dynamic_shapes={"x": [0]}, measure_latency=False)


def test_static_export_when_asked_and_on_mobile():
    x = torch.randn(2, 3, 16, 16)
    static = hewn.compile(SmallCNN().eval(), "cpu", example_inputs=(x,), dynamic_shapes=False, measure_latency=False)
    assert static.report["frontend"]["dynamic_dims"] == {}
    mobile = hewn.compile(SmallCNN().eval(), "mobile", example_inputs=(x,))
    assert mobile.report["frontend"]["dynamic_dims"] == {}
    asked = hewn.compile(SmallCNN().eval(), "mobile", example_inputs=(x,), dynamic_shapes=True)
    dims = asked.onnx.graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param == "batch"
    assert "static_shapes" not in [p["pass"] for p in asked.report["passes"]]


def test_dict_inputs_name_the_onnx_inputs_and_bind_constants():
    torch.manual_seed(0)
    model = TwoInputs().eval()
    feats, bias = torch.randn(2, 8), torch.randn(2, 4)
    result = hewn.compile(model, "cpu", example_inputs={"features": feats, "bias": bias, "scale": 3.0},
                          measure_latency=False)
    assert [i.name for i in result.onnx.graph.input] == ["features", "bias"]
    assert result.report["frontend"]["constants"] == {"scale": "3.0"}
    f5, b5 = torch.randn(5, 8), torch.randn(5, 4)
    np.testing.assert_allclose(_run(result, features=f5, bias=b5), model(f5, b5, 3.0).detach().numpy(),
                               rtol=1e-4, atol=1e-5)


def test_dynamo_exporter_is_the_fallback_and_the_report_says_why(capfd):
    pytest.importorskip("onnxscript")
    torch.manual_seed(0)
    model = Diff().eval()
    result = hewn.compile(model, "cpu", example_inputs=(torch.randn(1, 8),), measure_latency=False)
    frontend = result.report["frontend"]
    assert frontend["exporter"] == "torch.onnx.export(dynamo=True)"
    assert "aten::diff" in frontend["torchscript_exporter_failure"]
    x = torch.randn(3, 8)
    np.testing.assert_allclose(_run(result, x=x), model(x).detach().numpy(), rtol=1e-4, atol=1e-5)
    out, err = capfd.readouterr()
    assert len(out) + len(err) < 2000, "the exporters printed to the terminal"


def test_keyword_inputs_for_a_module_without_that_argument_fail_clearly():
    with pytest.raises(hewn.InputMismatchError, match="has no argument 'y'"):
        hewn.compile(SmallCNN(), example_inputs={"y": torch.randn(1, 3, 8, 8)})
    with pytest.raises(hewn.ConfigError, match="dynamic_shapes= takes"):
        hewn.compile(SmallCNN(), example_inputs=(torch.randn(1, 3, 8, 8),), dynamic_shapes="batch")


def test_torch_only_arguments_are_refused_for_an_onnx_model():
    from hewn.models.zoo import light_models

    path = str(light_models()["squeezenet"])
    with pytest.raises(hewn.ConfigError, match=r"^dynamic_shapes= applies to torch models \(how they are exported\)"):
        hewn.compile(path, dynamic_shapes=False)
    with pytest.raises(hewn.ConfigError, match=r"^example_kwargs= applies to torch models; an ONNX model takes"):
        hewn.compile(path, example_kwargs={"data_0": np.zeros((1, 3, 224, 224), np.float32)})
