"""What a compile gained, said plainly: one speed wording, advice when nothing paid, and the input
handed back when the compiled model is slower and no smaller."""
from __future__ import annotations

import onnx

import hewn
from hewn.core.speed import is_faster, is_slower, speed_words
from hewn.models.zoo import light_models, with_random_weights


def test_one_speed_wording():
    assert speed_words(10.0, 5.0) == "2.00x faster"
    assert speed_words(5.0, 6.5) == "1.30x slower"
    assert speed_words(5.0, 5.1).startswith("about the same speed")
    assert speed_words(float("nan"), 1.0) == "speed not measured"
    assert is_slower(1.0, 1.2) and not is_slower(1.0, 1.2, spread=0.3) and not is_slower(1.0, 1.01)
    # a gain inside the timings' own spread is noise (a busy machine: 1.10x at 28% spread)
    assert speed_words(3.4, 3.1, spread=0.28).startswith("about the same speed") and not is_faster(3.4, 3.1, 0.28)
    assert speed_words(3.4, 3.1) == "1.10x faster" and is_faster(3.4, 3.1)


def test_a_gain_inside_the_spread_is_not_a_gain(monkeypatch):
    """Timing faked: 1.10x with a 28% spread, nothing else changed: the outcome does not claim it."""
    import hewn.driver.compile as compile_module

    def noisy(original, compiled, feed, budget_s=5.0):
        return {"before_ms": 3.4, "after_ms": 3.1, "speedup": 1.097, "speed": speed_words(3.4, 3.1, 0.28),
                "spread": 0.28, "runs": 40}
    monkeypatch.setattr(compile_module, "latency", noisy)
    out = hewn.compile(_squeezenet(), "cpu", quantize=False).report["outcome"]
    assert out["summary"].startswith("nothing applied pays") and "about the same speed" in out["summary"]


def _squeezenet():
    return with_random_weights(onnx.load(str(light_models()["squeezenet"])))


def test_float_only_compile_says_nothing_paid_and_what_would_help():
    result = hewn.compile(_squeezenet(), "mobile")
    out = result.report["outcome"]
    if not out["smaller"]:
        assert out["summary"].startswith("nothing applied pays")
        assert any("calib_data=" in a for a in out["advice"])


def test_a_slower_and_no_smaller_model_is_not_handed_back(monkeypatch):
    """Timing is faked here (slower every time): the input comes back, and the report says why."""
    import hewn.driver.compile as compile_module

    def slower(original, compiled, feed, budget_s=5.0):
        return {"before_ms": 1.0, "after_ms": 1.5, "speedup": 0.667, "speed": "1.50x slower", "spread": 0.01,
                "runs": 40, "slower": True, "warning": "slower"}
    monkeypatch.setattr(compile_module, "latency", slower)
    model = _squeezenet()
    result = hewn.compile(model, "cpu")
    assert result.report["returned_input"]["why"].startswith("the compiled model measured 1.50x slower")
    assert sorted(n.op_type for n in result.onnx.graph.node) == sorted(n.op_type for n in model.graph.node)
    assert result.report["outcome"]["summary"].startswith("nothing applied pays")
    assert result.report["after"] == result.report["before"]
