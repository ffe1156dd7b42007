"""SmoothQuant is exact in real arithmetic: outputs match the original to float tolerance, the
activation outliers move into the weights, 1/s folds into LayerNorm when it can, idempotent."""
import numpy as np
import onnx

from hewn.core.ir import to_graph, to_model
from hewn.core.pass_infra import Context
from hewn.core.runtime import input_specs, make_session, run_all
from hewn.passes import SmoothQuant
from hewn.passes.quant.calibrate import CalibrationData
from hewn.targets import CPU

TEXT = """<ir_version: 8, opset_import: ["" : 17]>
g (float[1, 8, 16] x) => (float[1, 8, 12] y, float[1, 8, 12] z) {
    n = LayerNormalization <axis = -1> (x, gamma, beta)
    y = MatMul(n, w1)
    g1 = Relu(x)
    z = MatMul(g1, w2)
}"""


def _model():
    rng = np.random.default_rng(0)
    gamma = np.ones(16, np.float32)
    gamma[3] = 40.0  # an outlier channel after LayerNorm
    inits = {"gamma": gamma, "beta": rng.standard_normal(16), "w1": rng.standard_normal((16, 12)),
             "w2": rng.standard_normal((16, 12))}
    model = onnx.parser.parse_model(TEXT)
    model.graph.initializer.extend(onnx.numpy_helper.from_array(np.asarray(v, np.float32), k) for k, v in inits.items())
    return model


def test_smooth_quant_is_exact_and_folds_into_layernorm():
    model = _model()
    rng = np.random.default_rng(1)
    feeds = [{"x": (rng.standard_normal((1, 8, 16)) * np.where(np.arange(16) == 5, 30, 1)).astype(np.float32)}
             for _ in range(4)]
    graph = to_graph(model)
    ctx = Context(CPU, calibration=CalibrationData(feeds, input_specs(model)))
    result = SmoothQuant(SmoothQuant.Config(alpha=0.5, min_outlier_ratio=4.0)).run(graph, ctx)
    assert result.modified and result.stats["smoothed"] == 2
    out = to_model(graph, ir_version=8)
    onnx.checker.check_model(out, full_check=True)
    ops = [n.op_type for n in out.graph.node]
    assert ops.count("Mul") == 1  # the Relu branch needs an explicit 1/s; the LayerNorm one folds
    for want, got in zip(run_all(make_session(model, optimize=False), feeds), run_all(make_session(out, optimize=False), feeds)):
        for a, b in zip(want, got):
            np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-4 * np.abs(a).max())
    again = SmoothQuant(SmoothQuant.Config(alpha=0.5, min_outlier_ratio=4.0)).run(graph, Context(
        CPU, calibration=CalibrationData(feeds, input_specs(model))))
    assert not again.modified


def test_no_outliers_no_change():
    model = _model()
    feeds = [{"x": np.random.default_rng(2).standard_normal((1, 8, 16)).astype(np.float32)}]
    graph = to_graph(model)
    ctx = Context(CPU, calibration=CalibrationData(feeds, input_specs(model)))
    result = SmoothQuant(SmoothQuant.Config(min_outlier_ratio=1000.0)).run(graph, ctx)
    assert not result.modified and len(result.stats["below_outlier_ratio"]) == 2


def test_fold_only_smooths_where_no_mul_is_needed_and_stays_exact():
    """fold_only=True: the LayerNorm branch is smoothed (1/s folds into gamma/beta), the Relu branch,
    which would need a run-time Mul, is left as it is and said so; outputs still match; idempotent."""
    model = _model()
    rng = np.random.default_rng(1)
    feeds = [{"x": (rng.standard_normal((1, 8, 16)) * np.where(np.arange(16) == 5, 30, 1)).astype(np.float32)}
             for _ in range(4)]
    graph = to_graph(model)
    config = SmoothQuant.Config(alpha=0.5, min_outlier_ratio=4.0, fold_only=True)
    result = SmoothQuant(config).run(graph, Context(CPU, calibration=CalibrationData(feeds, input_specs(model))))
    assert result.modified and result.stats["smoothed"] == 1
    assert "fold_only" in str(result.stats["below_outlier_ratio"])
    out = to_model(graph, ir_version=8)
    assert [n.op_type for n in out.graph.node].count("Mul") == 0
    for want, got in zip(run_all(make_session(model, optimize=False), feeds), run_all(make_session(out, optimize=False), feeds)):
        for a, b in zip(want, got):
            np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-4 * np.abs(a).max())
    again = SmoothQuant(config).run(graph, Context(CPU, calibration=CalibrationData(feeds, input_specs(model))))
    assert not again.modified
