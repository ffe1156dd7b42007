"""The pass contract beyond the manager (tests/core/test_pass_manager.py has the analysis cache,
requires and preserves): configs validated at construction, run results in PassResult (never on
the pass object), the torch-side step interface, and the one exclude= rule."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
import pytest

from hewn import ConfigError, PassError, PruneConfig, QuantizeConfig, SVDConfig
from hewn.core.names import matches
from hewn.core.torch_step import TorchContext, TorchStep, TorchStepResult, run_torch_steps
from hewn.passes import Context, InsertQDQ, Quantize, Sparsify, to_graph
from hewn.passes.quant.annotate import QuantPlan
from hewn.passes.quant.calibrate import CalibrationData
from hewn.core.pass_infra import Reference
from hewn.core.runtime import input_specs, make_session, run_all, seeded_inputs
from hewn.targets import CPU

MODEL = """<ir_version: 8, opset_import: ["" : 17]>
g (float[1, 8] x) => (float[1, 4] y) {
    h = MatMul(x, w)
    y = Relu(h)
}"""


def _model() -> onnx.ModelProto:
    model = onnx.parser.parse_model(MODEL)
    w = np.random.default_rng(0).standard_normal((8, 4)).astype(np.float32)
    model.graph.initializer.append(onnx.numpy_helper.from_array(w, "w"))
    return model


def test_configs_validate_themselves_at_construction():
    for bad in (lambda: PruneConfig(amount=1.5), lambda: QuantizeConfig(budget=2.0), lambda: SVDConfig(rank=0),
                lambda: Sparsify.Config(pattern="1:8"), lambda: InsertQDQ.Config(method="kl")):
        with pytest.raises(ConfigError):
            bad()


def test_run_results_travel_in_pass_result_not_on_the_pass():
    model = _model()
    feeds = seeded_inputs(input_specs(model), 4, seed=0)
    graph = to_graph(model)
    inserter = InsertQDQ(InsertQDQ.Config(scheme="static_u8s8_reduced"))
    result = inserter.run(graph, Context(CPU, calibration=CalibrationData(feeds, input_specs(model))))
    assert result.modified and isinstance(result.artifact, QuantPlan)
    quantize = Quantize(Quantize.Config(measure_speed=False))
    reference = Reference(feeds, run_all(make_session(model), feeds))
    ctx = Context(CPU, reference=reference, calibration=CalibrationData(feeds, input_specs(model)))
    quantize.run(to_graph(model), ctx)
    assert set(vars(inserter)) == {"config"} and set(vars(quantize)) == {"config"}


@dataclass(frozen=True)
class _Add:
    value: int


class AddStep(TorchStep):
    name = "add"

    def run(self, module, ctx):
        return TorchStepResult(module + self.config.value, {self.name: module + self.config.value})


class Broken(TorchStep):
    name = "broken"

    def run(self, module, ctx):
        raise RuntimeError("boom")


def test_torch_steps_run_in_order_and_name_the_failing_one():
    ctx = TorchContext(None, CPU, [], [], "example_inputs")
    module, report = run_torch_steps(1, [AddStep(_Add(2)), AddStep(_Add(3))], ctx)
    assert module == 6 and report == {"add": 6}
    with pytest.raises(PassError, match=r"pass 'broken' failed \(after \[add\]\)"):
        run_torch_steps(1, [AddStep(_Add(2)), Broken(None)], ctx)


def test_one_exclude_rule():
    assert matches("Conv_0", ("Conv_0",)) and not matches("Conv_01", ("Conv_0",))
    assert matches("/layer1/conv1/Conv", ("/layer1/*",)) and matches("encoder.attention.q", ("*attention*",))
    assert not matches("encoder.attention.q", ("attention",))   # a bare word is a whole name, not a substring
    assert not matches("", ("*x*",)) and matches("", ("*",))
