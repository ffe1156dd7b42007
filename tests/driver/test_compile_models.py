"""compile() on every reference model for every target: valid ONNX, runs in ORT, equals the original."""
import numpy as np
import onnx
import pytest

from hewn import compile
from hewn.core.runtime import input_specs, to_feeds
from hewn.models import REFERENCE_MODELS
from hewn.targets import TARGETS

_CACHE = {}


def _model(name):
    if name not in _CACHE:
        _CACHE[name] = REFERENCE_MODELS[name]()
    return _CACHE[name]


@pytest.mark.parametrize("target", sorted(TARGETS))
@pytest.mark.parametrize("name", sorted(REFERENCE_MODELS))
def test_reference_model(name, target):
    model, inputs = _model(name)
    result = compile(model, target, example_inputs=inputs)
    onnx.checker.check_model(result.onnx)
    report = result.report
    budget = TARGETS[target].stated_budget
    if budget:  # a lossy finish (cuda: fp16 remainder) is held to the target's stated budget
        assert 1 - report["verification"]["mean_cosine"] <= budget, report["verification"]
    else:
        assert report["verification"]["passed"] and report["verification"]["max_rel_err"] < 1e-4
    assert report["after"]["nodes"] <= report["before"]["nodes"] + (40 if budget else 0)  # fp16 border Casts
    assert report["frontend"]["export_check"]["passed"]
    feeds = to_feeds(inputs, input_specs(result.onnx), "test")
    got = result.session().run(None, feeds)
    with __import__("torch").no_grad():
        want = model(*inputs)
    want = want if isinstance(want, (tuple, list)) else [want]
    for g, w in zip(got, want):
        if budget:
            w = w.numpy().ravel().astype(np.float64)
            assert 1 - float(g.ravel() @ w / (np.linalg.norm(g) * np.linalg.norm(w))) <= budget
        else:
            np.testing.assert_allclose(g, w.numpy(), rtol=1e-4, atol=1e-4)
