"""Target profiles: TensorRT's explicit-quantization rules (cuda), the fp16 remainder, mobile's
static shapes and op allow-list, ORT format, and the cpu transformer fusions."""
import numpy as np
import onnx
import onnx_graphsurgeon as gs
import onnxruntime as ort
import pytest
import torch

from hewn import compile
from hewn.core.errors import ConfigError
from hewn.core.ir import to_graph, to_model
from hewn.core.pass_infra import Context
from hewn.core.runtime import input_specs, make_session, seeded_inputs
from hewn.models.digits import digits_cnn
from hewn.targets import TARGETS, get_target
from hewn.targets import CUDA
from tests.helpers import op_counts, parse

WEIGHTED = ("Conv", "Gemm", "MatMul")


@pytest.fixture(scope="module")
def digits():
    model, data = digits_cnn()
    return model, (torch.from_numpy(data.x_test[:1]),), [(data.x_train[i:i + 1],) for i in range(16)]


def _cosine(a, b):
    a, b = np.ravel(a).astype(np.float64), np.ravel(b).astype(np.float64)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def test_unknown_target_lists_the_valid_ones():
    with pytest.raises(ConfigError, match="unknown target 'tpu'; valid targets: cpu, cuda, mobile"):
        get_target("tpu")
    with pytest.raises(ConfigError, match="valid targets"):
        compile(parse("""<ir_version: 8, opset_import: ["" : 17]> g (float[1, 4] x) => (float[1, 4] y) {
            y = Relu(x) }"""), "tpu")


def test_cuda_layout_follows_tensorrt_explicit_quantization_rules(digits):
    model, ex, calib = digits
    result = compile(model, "cuda", example_inputs=ex, calib_data=calib)
    graph = to_graph(result.onnx)
    q_nodes = [n for n in graph.nodes if n.op == "QuantizeLinear"]
    assert q_nodes
    for n in graph.nodes:
        if n.op in ("QuantizeLinear", "DequantizeLinear"):
            zero = n.inputs[2].values if len(n.inputs) > 2 and isinstance(n.inputs[2], gs.Constant) else None
            assert zero is not None and zero.dtype in (np.int8, np.int32) and not zero.any(), n.name  # symmetric
    for q in q_nodes:  # activations: Q/DQ only in front of weighted ops, residual Adds and pooling
        for dq in q.outputs[0].outputs:
            for reader in dq.outputs[0].outputs:
                assert reader.op in (*WEIGHTED, "Add", "GlobalAveragePool", "AveragePool"), reader.op
                if reader.op == "Add":  # residual: the other operand comes straight from a weighted op
                    other = [t for t in reader.inputs if t is not dq.outputs[0]][0]
                    assert other.inputs and other.inputs[0].op in WEIGHTED
        assert not any(c.op in WEIGHTED for c in q.inputs[0].outputs if c is not q) or q.inputs[0].inputs[0].op in WEIGHTED
    for n in graph.nodes:
        if n.op not in WEIGHTED:
            continue
        w = n.inputs[1]
        quantized = bool(w.inputs) and w.inputs[0].op == "DequantizeLinear"
        shape = (w.inputs[0].inputs[0].shape if quantized else w.shape)
        channels = (shape[0], shape[1] * int(n.attrs.get("group", 1))) if n.op == "Conv" else tuple(shape)
        assert quantized == (min(channels) >= 16), (n.name, channels)  # < 16 channels: fp16 is faster
        if quantized:
            scale = w.inputs[0].inputs[1].values
            assert scale.ndim == 1 and scale.size > 1  # per-channel weights
    reasons = result.report["quantization"]["plan"]["float_nodes"]
    assert any("< 16" in why for why in reasons.values()), reasons
    assert result.report["verification"]["mean_cosine"] >= 0.999


def test_non_residual_add_gets_no_qdq_on_cuda():
    model = parse("""<ir_version: 8, opset_import: ["" : 17]> g (float[1, 32] x) => (float[1, 32] y) {
        a = Relu(x)
        b = Sigmoid(x)
        y = Add(a, b) }""")
    feeds = seeded_inputs(input_specs(model), 4, seed=0)
    result = compile(model, "cuda", calib_data=feeds, quantize=True, passes=[("quantize", {})])
    assert "QuantizeLinear" not in op_counts(result.onnx)
    assert any("not a residual Add" in n["why"] for n in result.report["left_intact"]), result.report["left_intact"]


FP16_MODEL = """<ir_version: 8, opset_import: ["" : 17]> g (float[1, 8, 6, 6] x) => (float[1, 10] y) {
    c = Conv <pads = [1, 1, 1, 1]> (x, w)
    r = Relu(c)
    p = GlobalAveragePool(r)
    f = Flatten(p)
    m = MatMul(f, wm)
    n = LayerNormalization <axis = -1> (m, s, bias)
    y = Softmax(n) }"""


def _fp16_model():
    rng = np.random.default_rng(0)
    model = onnx.parser.parse_model(FP16_MODEL)
    inits = {"w": rng.standard_normal((8, 8, 3, 3)), "wm": rng.standard_normal((8, 10)),
             "s": np.ones(10), "bias": np.zeros(10)}
    model.graph.initializer.extend(onnx.numpy_helper.from_array(v.astype(np.float32), k) for k, v in inits.items())
    onnx.checker.check_model(model)
    return model


def test_float16_keeps_precision_sensitive_ops_in_fp32():
    from hewn.passes import Float16

    model = _fp16_model()
    feeds = seeded_inputs(input_specs(model), 2, seed=0)
    want = make_session(model).run(None, feeds[0])[0]
    graph = to_graph(model)
    ctx = Context(CUDA, ir_version=8)
    result = Float16().run(graph, ctx)
    assert result.modified and result.stats["fp16_nodes"] == 5, result.stats  # Conv Relu GAP Flatten MatMul
    out = to_model(graph, ir_version=8)
    onnx.checker.check_model(out, full_check=True)
    inferred = onnx.shape_inference.infer_shapes(out)
    types = {v.name: v.type.tensor_type.elem_type for v in [*inferred.graph.value_info, *inferred.graph.output,
                                                            *inferred.graph.input]}
    nodes = {n.op_type: n for n in out.graph.node}
    assert types[nodes["Conv"].output[0]] == onnx.TensorProto.FLOAT16
    for op in ("LayerNormalization", "Softmax"):
        assert all(types[t] == onnx.TensorProto.FLOAT for t in [*nodes[op].input[:1], *nodes[op].output]), op
    assert types["x"] == types["y"] == onnx.TensorProto.FLOAT  # callers feed and read fp32
    got = make_session(out).run(None, feeds[0])[0]
    assert _cosine(got, want) > 0.999 and not np.array_equal(got, want)
    assert not Float16().run(graph, Context(CUDA, ir_version=8)).modified  # already fp16: left as it is


def test_mobile_fixes_shapes_and_names_ops_outside_its_allow_list(tmp_path):
    model = parse("""<ir_version: 8, opset_import: ["" : 17]> g (float[N, 16] x) => (float[N, 16] y) {
        s = Shape(x)
        h = HardSwish(x)
        t = Reshape(h, s)
        y = Relu(t) }""")
    feeds = [{"x": np.random.default_rng(0).standard_normal((1, 16)).astype(np.float32)}]
    result = compile(model, "mobile", calib_data=feeds, quantize=False)
    out = result.onnx
    dims = [d.dim_value for d in out.graph.input[0].type.tensor_type.shape.dim]
    assert dims == [1, 16]
    assert "Shape" not in op_counts(out)  # folded once the shape was static
    support = result.report["op_support"]
    assert support["unsupported_ops"] == {"HardSwish": 1}
    notes = [n for n in result.report["left_intact"] if n["pass"] == "check_op_support"]
    assert len(notes) == 1 and "HardSwish" in notes[0]["why"] and notes[0]["where"]
    for node in out.graph.node:
        assert node.op_type in TARGETS["mobile"].allowed_ops or node.op_type == "HardSwish"
    assert out.opset_import[0].version <= TARGETS["mobile"].opset_range[1]
    path = result.save(tmp_path / "m.ort")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(session.run(None, feeds[0])[0], make_session(model).run(None, feeds[0])[0],
                               rtol=1e-5, atol=1e-6)


def test_mobile_refuses_a_newer_opset_with_the_reason():
    from hewn.core.errors import UnsupportedModelError

    model = parse("""<ir_version: 9, opset_import: ["" : 20]> g (float[1, 4] x) => (float[1, 4] y) {
        y = Relu(x) }""")
    with pytest.raises(UnsupportedModelError, match="opset 20, newer than target 'mobile' supports"):
        compile(model, "mobile")


def test_tiny_bert_attention_and_layernorm_are_fused_on_cpu():
    from hewn.models import REFERENCE_MODELS

    model, inputs = REFERENCE_MODELS["bert"]()
    result = compile(model, "cpu", example_inputs=inputs, measure_latency=False)
    ops = op_counts(result.onnx)
    layers = len(model.layers)
    assert ops.get("MultiHeadAttention", 0) + ops.get("Attention", 0) == layers, ops
    assert ops.get("SkipLayerNormalization", 0) >= layers, ops
    assert result.report["verification"]["passed"]  # fusions are exact: held to the lossless tolerance
