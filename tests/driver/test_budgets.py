"""Every lossy change is measured right after it runs: NaN/Inf where the original is finite, or an
error over the pass's stated budget, rolls the pass back (documented fallback) instead of
returning a broken model with "max abs error 0" in the report."""
from __future__ import annotations

import math

import numpy as np
import onnx

import hewn
from hewn.core.runtime import make_session
from hewn.passes import Pass, PassResult
from tests.helpers import parse


def _with_weight(text: str, **weights) -> onnx.ModelProto:
    model = onnx.parser.parse_model(text)
    for name, value in weights.items():
        model.graph.initializer.append(onnx.numpy_helper.from_array(np.asarray(value, np.float32), name))
    onnx.checker.check_model(model)
    return model


def _fresh_outputs(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    return make_session(model).run(None, {"x": x})[0]


def _scaled(w: float, k: float) -> onnx.ModelProto:
    return _with_weight("""<ir_version: 8, opset_import: ["" : 17]>
    g (float[4, 16] x) => (float[4, 16] y) {
        a = Mul(x, w)
        y = Mul(a, k)
    }""", w=np.array(w), k=np.array(k))


def test_fp16_keeps_fp32_what_it_cannot_represent_on_cuda():
    """A weight beyond 65504 was clipped (output 35% off at cosine 1.0), an activation beyond it
    overflows on the GPU, a weight below fp16's normal range loses most of its digits."""
    x = np.random.default_rng(5).standard_normal((4, 16)).astype(np.float32)   # inputs compile never saw
    for w, k, why in ((1e5, 1e-5, "changes its weight 'w' by 34.5%"), (1e-7, 1e7, "changes its weight 'w'"),
                      (3000.0, 1e-3, "reaches")):
        model = _scaled(w, k) if w != 3000.0 else _with_weight("""<ir_version: 8, opset_import: ["" : 17]>
        g (float[4, 16] x) => (float[4, 8] y) {
            h = MatMul(x, v)
            y = Mul(h, k)
        }""", v=np.full((16, 8), 10000.0), k=np.array(1e-3))
        result = hewn.compile(model, "cuda")
        assert any(n["pass"] == "float16" and why in n["why"] for n in result.report["left_intact"]), why
        np.testing.assert_allclose(_fresh_outputs(result.onnx, x), _fresh_outputs(model, x), rtol=1e-5, atol=1e-5)
    result = hewn.compile(_scaled(3.0, 2.0), "cuda")       # in range: fp16 as before
    assert result.report["float16"]["fp16_nodes"] == 2


class ScaleOutputs(Pass):
    """A planted lossy pass with a budget of 1e-3 that rescales the output by 10%: cosine stays 1.0."""

    name = "scale_outputs"
    lossless = False

    def budget(self, ctx):
        return 1e-3

    def run(self, graph, ctx):
        import onnx_graphsurgeon as gs

        out = graph.outputs[0]
        inner = gs.Variable("scaled_inner", dtype=out.dtype, shape=out.shape)
        producer = out.inputs[0]
        producer.outputs[0] = inner
        graph.nodes.append(gs.Node("Mul", "scale", inputs=[inner, gs.Constant("s", np.array(1.1, np.float32))],
                                   outputs=[out]))
        return PassResult(True, {})


def test_a_lossy_pass_over_its_own_budget_is_rolled_back():
    model = parse("""<ir_version: 8, opset_import: ["" : 17]>
    g (float[2, 8] x) => (float[2, 8] y) { y = Relu(x) }""")
    result = hewn.compile(model, passes=[ScaleOutputs()])
    record = result.report["passes"][0]
    assert "over its budget 0.001" in record["rolled_back"] and not record["modified"]
    assert [n.op_type for n in result.onnx.graph.node] == ["Relu"]


class PoisonRelu(Pass):
    """A planted lossy bug: Relu becomes Log, which is NaN on negative inputs."""

    name = "poison_relu"
    lossless = False

    def run(self, graph, ctx):
        hit = [n for n in graph.nodes if n.op == "Relu"]
        for node in hit:
            node.op = "Log"
        return PassResult(bool(hit), {"poisoned": len(hit)})


def test_any_lossy_pass_that_makes_nan_is_rolled_back():
    model = parse("""<ir_version: 8, opset_import: ["" : 17]>
    g (float[2, 8] x) => (float[2, 8] y) { y = Relu(x) }""")
    result = hewn.compile(model, passes=["fold_constants", PoisonRelu()])
    record = next(p for p in result.report["passes"] if p["pass"] == "poison_relu")
    assert not record["modified"] and "NaN/Inf" in record["rolled_back"]
    assert [n.op_type for n in result.onnx.graph.node] == ["Relu"]
    assert result.report["verification"]["rtol"]  # nothing lossy is left: checked as lossless


def test_report_has_per_output_figures_by_dtype():
    model = _with_weight("""<ir_version: 8, opset_import: ["" : 17]>
    g (float[4, 16] x) => (float[4, 10] logits, int64[4] ids) {
        logits = MatMul(x, w)
        ids = ArgMax <axis = 1, keepdims = 0> (logits)
    }""", w=np.random.default_rng(0).standard_normal((16, 10)))
    rng = np.random.default_rng(1)
    calib = [(rng.standard_normal((4, 16)).astype(np.float32),) for _ in range(8)]
    result = hewn.compile(model, "cpu", calib_data=calib, quantize=hewn.QuantizeConfig(measure_speed=False))
    v = result.report["verification"]
    if "outputs" in v:  # int8 was kept
        kinds = {o["kind"] for o in v["outputs"]}
        assert kinds == {"float", "integer"} and "exact_match" in v
        assert v["error"] >= 1 - v["exact_match"] and v["budget"] == 0.01 and v["budget_met"]
    else:
        assert "kept_float" in result.report["quantization"]
    assert math.isfinite(result.report["before"]["macs"])


def test_reported_figures_match_an_independent_recheck():
    """The report's per-output figures are what ORT measures on the verification inputs, and on
    inputs the compile never saw the int8 model stays within its budget."""
    import torch

    from hewn.core.measure import output_error
    from hewn.models import REFERENCE_MODELS

    model, (x,) = REFERENCE_MODELS["mlp"]()
    rng = np.random.default_rng(3)
    calib = [(rng.standard_normal((4, 64)).astype(np.float32),) for _ in range(16)]
    result = hewn.compile(model, "cpu", example_inputs=(x,), calib_data=calib,
                          quantize=hewn.QuantizeConfig(measure_speed=False, budget=0.02))
    v = result.report["verification"]
    assert "quantize" in v["lossy_passes"], result.report["quantization"]
    session = result.session()
    # the verification inputs: 8 calib samples spread over all 16 and the example at a second batch size
    from hewn.core.runtime import spread
    from hewn.frontends.torch_export import resized

    checked = spread(iter(calib), 8)[0] + [(resized((x,), ["x"], {"x": {0: "batch"}})[0].numpy(),)]
    with torch.no_grad():
        def reference(samples):
            return [[model(torch.from_numpy(s[0])).numpy()] for s in samples]
        again = output_error(reference(checked), [session.run(None, {"x": s[0]}) for s in checked])
        unseen = [(rng.standard_normal((4, 64)).astype(np.float32),) for _ in range(16)]
        fresh = output_error(reference(unseen), [session.run(None, {"x": s[0]}) for s in unseen])
    assert v["samples"] == 9 and math.isclose(again["error"], v["error"], rel_tol=1e-3, abs_tol=1e-6)
    assert math.isclose(again["outputs"][0]["cosine"], v["outputs"][0]["cosine"], rel_tol=1e-6)
    assert fresh["error"] <= 0.02 and fresh.get("top1_agreement", 1.0) >= 0.9
