"""InsertQDQ: exact on integer-valued models with identity scales, per-channel axes, the layout ORT
fuses into integer kernels (int8 coverage), idempotence, checker, bounded error on real models."""
import numpy as np
import onnx
import pytest

from hewn.core.ir import to_graph, to_model
from hewn.core.pass_infra import Context
from hewn.core.runtime import input_specs, make_session, run_all, seeded_inputs
from hewn.core.measure import output_error
from hewn.passes import InsertQDQ
from hewn.passes.quant.calibrate import CalibrationData
from hewn.passes.quant.coverage import int8_coverage
from hewn.targets import CPU
from tests.helpers import op_counts


def _quantize(model, feeds, **cfg):
    graph = to_graph(model)
    ctx = Context(CPU, ir_version=8, calibration=CalibrationData(feeds, input_specs(model)))
    result = InsertQDQ(InsertQDQ.Config(**cfg)).run(graph, ctx)
    out = to_model(graph, ir_version=8)
    onnx.checker.check_model(out, full_check=True)
    again = InsertQDQ(InsertQDQ.Config(**cfg)).run(graph, ctx)
    assert not again.modified
    return out, result, graph, ctx


def test_integer_model_with_identity_scales_is_exact():
    rng = np.random.default_rng(0)
    w = rng.integers(-64, 65, (8, 5)).astype(np.float32)
    w[0, :] = 64  # every output column has |w| max = 64 -> 7-bit weight scale exactly 1
    b = rng.integers(-100, 100, 5).astype(np.float32)
    model = onnx.helper.make_model(onnx.helper.make_graph(
        [onnx.helper.make_node("Gemm", ["x", "w", "b"], ["y"])], "g",
        [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 8])],
        [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 5])],
        [onnx.numpy_helper.from_array(w, "w"), onnx.numpy_helper.from_array(b, "b")]),
        opset_imports=[onnx.helper.make_opsetid("", 17)], ir_version=8)
    feeds = [{"x": rng.integers(0, 256, (1, 8)).astype(np.float32)} for _ in range(6)]
    feeds[0]["x"][0, :2] = [0, 255]  # uint8 range [0, 255] -> activation scale exactly 1
    out, result, _, _ = _quantize(model, feeds, scheme="static_u8s8_reduced")
    assert result.modified and op_counts(out)["DequantizeLinear"] == 3  # x, weight, int32 bias
    want = run_all(make_session(model), feeds)
    for optimize in (False, True):  # reference QDQ semantics, and ORT's fused QGemm
        got = run_all(make_session(out, optimize=optimize), feeds)
        for a, b_ in zip(want, got):
            np.testing.assert_array_equal(a[0], b_[0])


CONV = """<ir_version: 8, opset_import: ["" : 17]>
g (float[1, 3, 8, 8] x) => (float[1, 4] y) {
    c = Conv <pads = [1, 1, 1, 1]> (x, w1, b1)
    r = Relu(c)
    p = GlobalAveragePool(r)
    f = Flatten(p)
    y = MatMul(f, w2)
}"""


def _parse_with(text, inits):
    model = onnx.parser.parse_model(text)
    model.graph.initializer.extend(onnx.numpy_helper.from_array(v.astype(np.float32), k) for k, v in inits.items())
    onnx.checker.check_model(model)
    return model


def _conv_model():
    rng = np.random.default_rng(1)
    inits = {"w1": rng.standard_normal((6, 3, 3, 3)), "b1": rng.standard_normal(6), "w2": rng.standard_normal((6, 4))}
    return _parse_with(CONV, inits)


def test_per_channel_axes_relu_absorbed_and_names_kept():
    model = _conv_model()
    feeds = seeded_inputs(input_specs(model), 4, seed=0)
    out, result, graph, ctx = _quantize(model, feeds, scheme="static_u8s8_reduced")
    dqs = {n.input[0]: n for n in out.graph.node if n.op_type == "DequantizeLinear"}
    inits = {i.name: onnx.numpy_helper.to_array(i) for i in out.graph.initializer}
    conv_w = next(n for k, n in dqs.items() if k in inits and inits[k].shape == (6, 3, 3, 3))
    matmul_w = next(n for k, n in dqs.items() if k in inits and inits[k].shape == (6, 4))
    assert onnx.helper.get_attribute_value(conv_w.attribute[0]) == 0 and inits[conv_w.input[1]].shape == (6,)
    assert onnx.helper.get_attribute_value(matmul_w.attribute[0]) == 1 and inits[matmul_w.input[1]].shape == (4,)
    assert inits[conv_w.input[0]].dtype == np.int8
    # Relu's output is quantized (zero point 0 = qmin), the Conv's is not: ORT drops the Relu.
    quantized = {n.input[0] for n in out.graph.node if n.op_type == "QuantizeLinear"}
    assert "r/float" in quantized and "c/float" not in quantized and "c" not in quantized
    # Flatten shares GlobalAveragePool's scale (int8 Flatten); the graph output keeps its name
    assert [o.name for o in out.graph.output] == ["y"]
    err = output_error(run_all(make_session(model), feeds), run_all(make_session(out), feeds))
    assert err["mean_cosine"] > 0.999
    cov = int8_coverage(graph, ctx)
    assert cov["coverage"] == 1.0 and cov["ort_ops"].get("QLinearConv") == 1


@pytest.mark.parametrize("name", ["resnet20", "mobilenetv2"])
def test_cnn_int8_coverage_and_error(name):
    from hewn.frontends.from_torch import capture, export_onnx
    from hewn.models import REFERENCE_MODELS

    model, inputs = REFERENCE_MODELS[name]()
    onnx_model = export_onnx(capture(model, inputs), 17)
    feeds = seeded_inputs(input_specs(onnx_model), 4, seed=0)
    out, result, graph, ctx = _quantize(onnx_model, feeds, scheme="static_u8s8_reduced", method="percentile")
    cov = int8_coverage(graph, ctx)
    assert cov["coverage"] >= 0.9, cov
    err = output_error(run_all(make_session(onnx_model), feeds), run_all(make_session(out), feeds))
    assert err["mean_cosine"] > 0.99, err
    assert out.ByteSize() < 0.4 * onnx_model.ByteSize()  # int8 weights: ~4x smaller file


def test_dynamic_matmul_fuses_and_skips_activation_matmuls():
    rng = np.random.default_rng(2)
    model = _parse_with("""<ir_version: 8, opset_import: ["" : 17]>
    g (float[1, 16, 32] x) => (float[1, 16, 16] y) {
        h = MatMul(x, w)
        hb = Add(b, h)
        t = Transpose <perm = [0, 2, 1]> (hb)
        y = MatMul(hb, t)
    }""", {"w": rng.standard_normal((32, 24)), "b": rng.standard_normal(24)})
    feeds = seeded_inputs(input_specs(model), 3, seed=0)
    out, result, graph, ctx = _quantize(model, feeds, scheme="dynamic_u8s8_reduced")
    assert result.stats["dynamic_nodes"] == 1 and op_counts(out)["MatMulInteger"] == 1
    assert "its weight is not a constant" in str(result.stats["float_nodes"])
    cov = int8_coverage(graph, ctx)
    assert cov["ort_ops"].get("DynamicQuantizeMatMul") == 1
    err = output_error(run_all(make_session(model), feeds), run_all(make_session(out), feeds))
    assert 0.995 < err["mean_cosine"] < 1.0  # lossy, but close


def test_exclude_keeps_a_layer_float_and_says_why():
    model = _conv_model()
    feeds = seeded_inputs(input_specs(model), 2, seed=0)
    out, result, _, _ = _quantize(model, feeds, scheme="static_u8s8_reduced", exclude=("Conv_0",))
    assert result.stats["float_nodes"] == {"Conv_0": "kept in float (excluded)"}
    conv = next(n for n in out.graph.node if n.op_type == "Conv")
    assert conv.input[1] == "w1"  # the float weight, no DequantizeLinear


def test_unknown_method_and_scheme_are_config_errors():
    from hewn.core.errors import ConfigError

    model = _conv_model()
    graph = to_graph(model)
    with pytest.raises(ConfigError, match="unknown calibration method 'kl'"):
        InsertQDQ(InsertQDQ.Config(method="kl")).run(graph, Context(CPU))
    with pytest.raises(ConfigError, match="unknown quantization scheme 'int4'"):
        InsertQDQ(InsertQDQ.Config(scheme="int4")).run(graph, Context(CPU))


def test_a_dead_channels_bias_is_not_clipped_by_int32():
    """A channel whose weights are ~1e-9 (dead after training) with a bias of 5: at s_x * s_w its
    int32 bias overflowed and was clipped (78 biases of EfficientNet-Lite0); the weight scale is
    raised until the bias fits, so the channel still outputs its bias."""
    import hewn
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    w = (rng.standard_normal((4, 3, 3, 3)) / 4).astype(np.float32)
    w[2] = 1e-9
    b = np.array([0.1, -0.2, 5.0, 0.3], np.float32)
    graph = helper.make_graph([helper.make_node("Conv", ["x", "w", "b"], ["y"], pads=[1, 1, 1, 1])], "dead",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8, 8])],
                              [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    calib = [{"x": rng.standard_normal((1, 3, 8, 8)).astype(np.float32)} for _ in range(8)]
    result = hewn.compile(model, "cpu", calib_data=calib, measure_latency=False,
                          quantize=hewn.QuantizeConfig(schemes=("static_u8s8",), measure_speed=False, force=True))
    y = result.session().run(None, calib[0])[0]
    assert np.allclose(y[0, 2], 5.0, atol=0.05), y[0, 2].max()
