"""EliminateDeadChannels: planted zero-weight, constant and dead-ReLU channels go, constants are
folded into the readers' biases, outputs stay the same; a constant read by a padded conv stays."""
import numpy as np
import onnx
import torch
from torch import nn

from hewn.frontends import from_torch as frontend_torch
from hewn.core.ir import to_graph, to_model
from hewn.core.pass_infra import Context, Reference
from hewn.core.runtime import input_specs, seeded_inputs
from hewn.passes import EliminateDeadChannels
from hewn.targets import CPU
from tests.helpers import ort_outputs


class Planted(nn.Module):
    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(3, 16, 3, padding=1)
        self.b1 = nn.BatchNorm2d(16)
        self.c2 = nn.Conv2d(16, 16, 1)
        self.c3 = nn.Conv2d(16, 8, 3, padding=1)
        self.fc = nn.Linear(8 * 8 * 8, 10)

    def forward(self, x):
        y = torch.relu(self.b1(self.c1(x)))
        z = torch.relu(self.c2(y))
        return self.fc(torch.flatten(torch.relu(self.c3(z)), 1))


def planted_model():
    torch.manual_seed(0)
    net = Planted().eval()
    with torch.no_grad():
        net.b1.running_mean.uniform_(-1, 1)
        net.b1.bias.uniform_(0.5, 1.0)
        net.c1.weight[[1, 5]] = 0          # zero weights: constant after BN (nonzero), read by a 1x1 conv
        net.c1.bias[[1, 5]] = 0
        net.c2.weight[[3]] = 0             # constant 0.7 read by a padded 3x3 conv: must stay
        net.c2.bias[3] = 0.7
        net.c2.weight[[4]] = 0             # ReLU(-1) = 0: dead
        net.c2.bias[4] = -1.0
        net.c3.weight[[6]] = 0             # zero weights, zero bias: dead into the Linear
        net.c3.bias[6] = 0.0
    example = (torch.randn(1, 3, 8, 8),)
    return frontend_torch.export_onnx(frontend_torch.capture(net, example), 17)


def run(model, **config):
    feeds = seeded_inputs(input_specs(model), 3, seed=0)
    reference = ort_outputs(model, feeds)
    graph = to_graph(model)
    ctx = Context(CPU, reference=Reference(feeds, reference))
    result = EliminateDeadChannels(EliminateDeadChannels.Config(**config)).run(graph, ctx)
    out = to_model(graph, ir_version=model.ir_version)
    onnx.checker.check_model(out, full_check=True)
    fresh = seeded_inputs(input_specs(model), 2, seed=7)  # inputs the pass never saw
    for want, got in zip(ort_outputs(model, fresh), ort_outputs(out, fresh)):
        np.testing.assert_allclose(got[0], want[0], rtol=1e-5, atol=1e-5)
    return graph, result, ctx


def conv_widths(graph):
    return [n.inputs[1].shape[0] for n in graph.nodes if n.op == "Conv"]


def test_planted_dead_and_constant_channels_are_removed_outputs_unchanged():
    graph, result, ctx = run(planted_model(), use_calibration=False)
    assert result.modified
    assert conv_widths(graph) == [14, 15, 7]
    assert result.stats["evidence"] == {"zero weights": 4}
    assert any("padded Conv" in n["why"] for n in ctx.notes)
    again = EliminateDeadChannels(EliminateDeadChannels.Config(use_calibration=False)).run(graph, Context(CPU))
    assert not again.modified


def test_nothing_dead_nothing_changes():
    torch.manual_seed(1)
    net = Planted().eval()
    model = frontend_torch.export_onnx(frontend_torch.capture(net, (torch.randn(1, 3, 8, 8),)), 17)
    graph, result, _ = run(model, use_calibration=False)
    assert not result.modified
