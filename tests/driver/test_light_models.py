"""The ONNX model-zoo light models (opset 9, real architectures) on every target.

They ship ConstantOfShape placeholder weights; the tests give them seeded random weights and
expose the logits before the final Softmax, so that a wrong rewrite cannot hide in a
saturated softmax.
"""
import numpy as np
import onnx
import pytest

from hewn import compile
from hewn.core.runtime import input_specs, make_session, seeded_inputs
from hewn.models.zoo import light_models, with_random_weights
from hewn.targets import TARGETS

LIGHT = light_models()


@pytest.mark.parametrize("target", sorted(TARGETS))
@pytest.mark.parametrize("name", sorted(LIGHT))
def test_light_model_with_random_weights(name, target):
    original = with_random_weights(onnx.load(str(LIGHT[name])), seed=0)
    feeds = seeded_inputs(input_specs(original), 1, seed=7)
    want = make_session(original, optimize=False).run(None, feeds[0])
    result = compile(original, target, calib_data=feeds, quantize=False, measure_latency=False)
    onnx.checker.check_model(result.onnx)
    budget = TARGETS[target].stated_budget
    # cuda's fp16 remainder adds Casts at the fp32 islands' borders; everything else only shrinks
    assert result.report["after"]["nodes"] <= len(original.graph.node) + (40 if budget else 0)
    got = result.session().run(None, feeds[0])
    assert len(got) == len(want) >= 1  # with a final Softmax: probabilities and logits
    for g, w in zip(got, want):
        assert np.abs(w).max() > 1e-3  # outputs that are not trivially zero
        if budget:
            g, w = g.ravel().astype(np.float64), w.ravel().astype(np.float64)
            assert 1 - g @ w / (np.linalg.norm(g) * np.linalg.norm(w)) <= budget
        else:
            np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-5 * max(1.0, float(np.abs(w).max())))


@pytest.mark.parametrize("name", ["resnet50", "vgg19"])
def test_raw_light_model_stays_compact(name):
    raw = onnx.load(str(LIGHT[name]))
    result = compile(raw, "cpu")
    # The 100+ MB of weights are ConstantOfShape fills; folding must not materialize them.
    assert result.onnx.ByteSize() < 4 * 1024 * 1024


@pytest.mark.parametrize("name", ["squeezenet", "shufflenet"])
def test_light_model_int8(name):
    """Opset-9 zoo models (upgraded to 13 for per-axis Q/DQ), grouped convs included: valid, int8 in
    ORT's integer kernels, close to float."""
    from hewn.passes.quant.quantize import QuantizeConfig

    original = with_random_weights(onnx.load(str(LIGHT[name])), seed=0)
    feeds = seeded_inputs(input_specs(original), 4, seed=7)
    config = QuantizeConfig(schemes=("static_u8s8_reduced",), measure_speed=False, budget=0.05)
    result = compile(original, "cpu", calib_data=feeds, quantize=config)
    onnx.checker.check_model(result.onnx)
    q = result.report["quantization"]
    assert q["int8_coverage"]["coverage"] >= 0.9, q["int8_coverage"]
    assert result.report["verification"]["mean_cosine"] >= 0.95
