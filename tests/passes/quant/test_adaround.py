"""AdaRound: the learned rounding reconstructs each layer better than nearest on calibration data,
stays one step from nearest inside the integer grid, writes new initializers (the float model and
the old arrays untouched), reads every conv geometry right, and reports what it leaves alone."""
import numpy as np
import onnx
import pytest
import onnx_graphsurgeon as gs

from hewn.core.graph_utils import const_value
from hewn.core.ir import to_graph, to_model
from hewn.core.pass_infra import Context
from hewn.core.runtime import input_specs, make_session, run_all
from hewn.passes import InsertQDQ
from hewn.passes.quant.adaround import adaround
from hewn.passes.quant.calibrate import CalibrationData
from hewn.targets import CPU

NET = """<ir_version: 8, opset_import: ["" : 17]>
g (float[1, 4, 10, 10] x) => (float[1, 5] y) {
    c = Conv <pads = [1, 1, 1, 1]> (x, w1, b1)
    r = Relu(c)
    d = Conv <group = 8, strides = [2, 2], pads = [1, 1, 1, 1]> (r, w2, b2)
    p = GlobalAveragePool(d)
    f = Flatten(p)
    y = Gemm <transB = 1> (f, w3, b3)
}"""
LAYERS = ("conv", "depthwise", "gemm")


def _model(text, inits, names=LAYERS):
    model = onnx.parser.parse_model(text)
    model.graph.initializer.extend(onnx.numpy_helper.from_array(v.astype(np.float32), k) for k, v in inits.items())
    weighted = [n for n in model.graph.node if n.op_type in ("Conv", "Gemm", "MatMul")]
    for node, name in zip(weighted, names):
        node.name = name
    onnx.checker.check_model(model)
    return model


def _net(matmul=False):
    """NET; with matmul=True its last layer is a MatMul with a (K, N) weight (written transposed back)."""
    rng = np.random.default_rng(0)
    inits = {"w1": rng.standard_normal((8, 4, 3, 3)), "b1": rng.standard_normal(8) * 0.1,
             "w2": rng.standard_normal((8, 1, 3, 3)), "b2": rng.standard_normal(8) * 0.1,
             "w3": rng.standard_normal((5, 8)), "b3": rng.standard_normal(5) * 0.1}
    if matmul:
        inits["w3"] = inits.pop("w3").T
        del inits["b3"]
    return _model(NET.replace("Gemm <transB = 1> (f, w3, b3)", "MatMul(f, w3)") if matmul else NET, inits)


def _feeds(model, count=16, seed=1, integer=False):
    rng = np.random.default_rng(seed)
    shape = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    make = (lambda: rng.integers(0, 256, shape)) if integer else (lambda: rng.standard_normal(shape))
    return [{"x": make().astype(np.float32)} for _ in range(count)]


def _by_hand(model):
    """The QDQ graph InsertQDQ makes for a single Conv, at unit scales (InsertQDQ leaves 1-D Conv float)."""
    graph = to_graph(model)
    conv = graph.nodes[0]
    x, w, b = conv.inputs
    n = w.values.shape[0]

    def dq(name, values, scale, zero, attrs=None):
        out = gs.Variable(f"{name}/dequantized", dtype=np.float32)
        graph.nodes.append(gs.Node("DequantizeLinear", attrs=attrs or {}, outputs=[out], inputs=[
            values, gs.Constant(f"{name}/scale", scale), gs.Constant(f"{name}/zero", zero)]))
        return out

    xq = gs.Variable("x/quantized", dtype=np.uint8)
    graph.nodes.append(gs.Node("QuantizeLinear", inputs=[x, gs.Constant("xs", np.array(1, np.float32)),
                                                         gs.Constant("xz", np.array(0, np.uint8))], outputs=[xq]))
    conv.inputs = [dq("x", xq, np.array(1, np.float32), np.array(0, np.uint8)),
                   dq("w", gs.Constant("wq", w.values.astype(np.int8)), np.ones(n, np.float32), np.zeros(n, np.int8),
                      {"axis": 0}),
                   dq("b", gs.Constant("bq", b.values.astype(np.int32)), np.ones(n, np.float32), np.zeros(n, np.int32),
                      {"axis": 0})]
    return graph.toposort()


def _quantize(model, feeds, **cfg):
    graph = to_graph(model)
    ctx = Context(CPU, ir_version=8, calibration=CalibrationData(feeds, input_specs(model)))
    assert InsertQDQ(InsertQDQ.Config(scheme="static_u8s8_reduced", **cfg)).run(graph, ctx).modified
    return graph


def _weights(graph):
    """{layer: (its DequantizeLinear's integer input tensor, that DequantizeLinear)}."""
    return {n.name: (n.inputs[1].inputs[0].inputs[0], n.inputs[1].inputs[0]) for n in graph.nodes
            if n.name in LAYERS and n.inputs[1].inputs and n.inputs[1].inputs[0].op == "DequantizeLinear"}


def _output_error(model, graph, feeds):
    want = run_all(make_session(model, optimize=False), feeds)
    got = run_all(make_session(to_model(graph.copy(), ir_version=8), optimize=False), feeds)
    return float(np.mean([np.mean((w[0] - g[0]) ** 2) for w, g in zip(want, got)]))


def test_lowers_conv_depthwise_and_gemm_reconstruction_error_and_changes_weights():
    model, feeds = _net(), _feeds(_net())
    graph = _quantize(model, feeds)
    before = {k: np.array(const_value(t)) for k, (t, _) in _weights(graph).items()}
    error_before = _output_error(model, graph, feeds)
    stats = adaround(model, graph, feeds, iters=300, batch=128)
    rows = {r["node"]: r for r in stats["layers"]}
    assert stats["done"] == 3 and set(rows) == set(LAYERS) and not stats["skipped"] and not stats["not_reached"]
    for name in LAYERS:
        assert rows[name]["mse_adaround"] < rows[name]["mse_nearest"], rows[name]
    after = {k: const_value(t) for k, (t, _) in _weights(graph).items()}
    assert sum(int(np.count_nonzero(after[k] != before[k])) for k in LAYERS) > 0   # not a no-op
    assert _output_error(model, graph, feeds) < error_before
    onnx.checker.check_model(to_model(graph.copy(), ir_version=8), full_check=True)


@pytest.mark.parametrize("matmul", [False, True])
def test_learned_weights_are_floor_or_ceil_in_the_grid_and_new_arrays(matmul):
    model = _net(matmul)
    feeds = _feeds(model)
    graph = _quantize(model, feeds)
    old = _weights(graph)
    kept = {k: (t, np.array(const_value(t))) for k, (t, _) in old.items()}
    rows = {r["node"]: r for r in adaround(model, graph, feeds, iters=200, batch=128)["layers"]}
    floats = {i.name: onnx.numpy_helper.to_array(i) for i in model.graph.initializer}
    assert "flipped" in rows["gemm"]   # the (K, N) MatMul weight is written back transposed
    for name, (tensor, dq) in _weights(graph).items():
        q = const_value(tensor)
        assert q.dtype == np.int8 and (tensor is kept[name][0]) == ("kept" in rows[name])   # kept: nearest was better
        assert np.array_equal(const_value(kept[name][0]), kept[name][1])   # the old array untouched
        axis = int(dq.attrs.get("axis", 1))
        scale = const_value(dq.inputs[1]).reshape([-1 if i == axis else 1 for i in range(q.ndim)])
        w = floats[{"conv": "w1", "depthwise": "w2", "gemm": "w3"}[name]] / scale
        assert np.all((q == np.floor(w)) | (q == np.ceil(w))), name
        assert q.min() >= -64 and q.max() <= 64   # the 7-bit grid this scheme uses


def test_float_model_is_not_modified():
    model, feeds = _net(), _feeds(_net())
    graph = _quantize(model, feeds)
    snapshot = model.SerializeToString()
    adaround(model, graph, feeds, iters=50)
    assert model.SerializeToString() == snapshot


GEOMETRIES = [   # (input shape, conv attributes, weight shape, output shape)
    ([1, 4, 9, 11], "group = 2, pads = [0, 1, 2, 1], strides = [2, 2], dilations = [1, 2]", (6, 2, 3, 3), [1, 6, 5, 5]),
    ([1, 3, 7, 8], 'auto_pad = "SAME_UPPER", strides = [2, 2]', (4, 3, 2, 3), [1, 4, 4, 4]),
    ([1, 3, 17], "strides = [2], dilations = [2], pads = [2, 2]", (4, 3, 3), [1, 4, 9]),
]


def _exact_weights(rng, shape, axis=0):
    """Integers in [-64, 64] with 64 in each output channel: the 7-bit weight scale is exactly 1."""
    w = rng.integers(-64, 65, shape).astype(np.float32)
    np.moveaxis(w, axis, 0).reshape(shape[axis], -1)[:, 0] = 64
    return w


def test_conv_geometry_groups_pads_dilations_auto_pad_and_1d_reconstruct_exactly():
    """Integer weights and bias, uint8-exact inputs: the quantized conv equals the float one, so a
    mistake in reading a layer (patches, pads, groups, bias) would show as a nonzero error."""
    rng = np.random.default_rng(3)
    for x_shape, attrs, w_shape, y_shape in GEOMETRIES:
        dims = lambda shape: ", ".join(map(str, shape))  # noqa: E731
        text = (f'<ir_version: 8, opset_import: ["" : 17]>\ng (float[{dims(x_shape)}] x) => (float[{dims(y_shape)}] y) '
                f'{{\n    y = Conv <{attrs}> (x, w, b)\n}}')
        model = _model(text, {"w": _exact_weights(rng, w_shape), "b": rng.integers(-50, 50, w_shape[0])}, ("conv",))
        feeds = _feeds(model, 6, integer=True)
        for f in feeds:
            f["x"].reshape(-1)[:2] = [0, 255]   # the input's uint8 scale is exactly 1
        graph = _quantize(model, feeds) if len(x_shape) == 4 else _by_hand(model)
        stats = adaround(model, graph, feeds, iters=20)
        assert stats["done"] == 1 and stats["layers"][0]["mse_nearest"] < 1e-6, (attrs, stats)


def test_gemm_without_transb_and_3d_matmul_reconstruct_exactly():
    rng = np.random.default_rng(4)
    cases = [('float[2, 6] x) => (float[2, 4] y) {\n    y = Gemm(x, w, b)', (6, 4), [2, 6]),
             ('float[1, 3, 6] x) => (float[1, 3, 4] y) {\n    y = MatMul(x, w)', (6, 4), [1, 3, 6])]
    for body, w_shape, x_shape in cases:
        inits = {"w": _exact_weights(rng, w_shape, axis=1)}
        if "Gemm" in body:
            inits["b"] = rng.integers(-50, 50, w_shape[1])
        model = _model(f'<ir_version: 8, opset_import: ["" : 17]>\ng ({body}\n}}', inits, ("layer",))
        feeds = _feeds(model, 6, integer=True)
        for f in feeds:
            f["x"].reshape(-1)[:2] = [0, 255]
        stats = adaround(model, _quantize(model, feeds), feeds, iters=20)
        assert stats["done"] == 1 and stats["layers"][0]["mse_nearest"] < 1e-6, (body, stats)


def test_layers_it_cannot_handle_are_left_as_they_are_with_the_reason():
    model, feeds = _net(), _feeds(_net())
    graph = _quantize(model, feeds, exclude=("gemm",))     # gemm: float weight, no DequantizeLinear
    depthwise = _weights(graph)["depthwise"][1]
    shared = gs.Node("Identity", "reader", inputs=[depthwise.outputs[0]], outputs=[gs.Variable("extra")])
    graph.nodes.append(shared)                              # depthwise: its weight read by another node
    weights = {k: t for k, (t, _) in _weights(graph).items()}
    stats = adaround(model, graph, feeds, iters=50)
    why = {s["node"]: s["why"] for s in stats["skipped"]}
    assert "not an integer tensor behind a DequantizeLinear" in why["gemm"]
    assert "shared" in why["depthwise"]
    assert _weights(graph)["depthwise"][0] is weights["depthwise"]
    assert [r["node"] for r in stats["layers"]] == ["conv"]


def test_time_limit_leaves_layers_at_nearest_and_reports_them():
    model, feeds = _net(), _feeds(_net())
    graph = _quantize(model, feeds)
    weights = {k: t for k, (t, _) in _weights(graph).items()}
    stats = adaround(model, graph, feeds, iters=50, time_limit_s=0)
    assert stats["done"] == 0 and [r["node"] for r in stats["not_reached"]] == list(LAYERS)
    assert all(_weights(graph)[k][0] is weights[k] for k in LAYERS)


def test_quantize_rounding_adaround_is_kept_only_when_it_measures_closer():
    """QuantizeConfig(rounding="adaround") through compile(): the learned rounding is measured
    against the nearest rounding on the held-out samples and the report says which was kept."""
    import torch

    import hewn

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(8, 8, 3, padding=1),
                              torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(8 * 8 * 8, 10)).eval()
    rng = np.random.default_rng(0)
    calib = [(rng.standard_normal((1, 3, 8, 8)).astype(np.float32),) for _ in range(48)]
    result = hewn.compile(net, "cpu", example_inputs=(torch.from_numpy(calib[0][0]),), calib_data=calib,
                          measure_latency=False, quantize=hewn.QuantizeConfig(schemes=("static_u8s8",),
                                                                              measure_speed=False, force=True,
                                                                              rounding="adaround"))
    rounding = result.report["quantization"]["plan"]["adaround"]
    assert rounding["layers"] == 3 and rounding["samples"] == 24   # calibration's half: the rest is held out
    assert rounding["kept"] is (rounding["error_adaround"] < rounding["error_nearest"])
    with pytest.raises(hewn.ConfigError, match="rounding"):
        hewn.QuantizeConfig(rounding="stochastic")
