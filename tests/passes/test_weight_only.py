"""Block-wise weight-only quantization: the searched ranges beat min/max, ORT's MatMulNBits and
GatherBlockQuantized compute exactly what the dequantized weights do, and a tied lm_head shares
its table with the embedding."""
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from hewn.passes.quant.weight_only.block_quant import quantize
from hewn.passes.quant.weight_only.rewrite import Choice, find_targets, rewrite, weight_nk


def _session(model):
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


@pytest.mark.parametrize("bits", [4, 8])
def test_search_is_no_worse_than_min_max(bits):
    w = np.random.default_rng(0).standard_normal((64, 256)).astype(np.float32)
    w[:, 7] *= 20  # an outlier column: shrinking the range pays
    imp = np.random.default_rng(1).random(256).astype(np.float32)
    _, searched = quantize(w, bits, 32, importance=imp)
    _, plain = quantize(w, bits, 32, importance=imp, search=False)
    assert searched <= plain * 1.0001
    blocks, _ = quantize(w, bits, 32)
    step = blocks.scale[..., None]
    err = np.abs(blocks.dequantize().reshape(blocks.q.shape) - w.reshape(blocks.q.shape))
    assert (err <= step * 0.5 + 1e-5).mean() > 0.95  # inside the range, within half a step


def test_eight_bits_are_far_closer_than_four():
    w = np.random.default_rng(2).standard_normal((16, 128)).astype(np.float32)
    _, err8 = quantize(w, 8, 32)
    _, err4 = quantize(w, 4, 32)
    assert err8 < 1e-4 and err8 < err4 / 100


def _matmul_gather_model(k=64, n=96, vocab=128, tied=True):
    rng = np.random.default_rng(3)
    emb = rng.standard_normal((vocab, k)).astype(np.float32)
    w = rng.standard_normal((k, n)).astype(np.float32)
    head = np.ascontiguousarray(emb.T) if tied else rng.standard_normal((k, vocab)).astype(np.float32)
    nodes = [helper.make_node("Gather", ["E", "ids"], ["x"], name="embed"),
             helper.make_node("MatMul", ["x", "W"], ["h"], name="proj"),
             helper.make_node("Relu", ["h"], ["r"]),
             helper.make_node("MatMul", ["x", "H"], ["logits"], name="lm_head")]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("ids", TensorProto.INT64, ["b", "s"])],
                          [helper.make_tensor_value_info("r", TensorProto.FLOAT, ["b", "s", n]),
                           helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["b", "s", vocab])],
                          [numpy_helper.from_array(emb, "E"), numpy_helper.from_array(w, "W"), numpy_helper.from_array(head, "H")])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


@pytest.mark.parametrize("bits,block", [(4, 32), (8, 16), (8, 64)])
def test_rewrite_computes_the_dequantized_weights(bits, block):
    model = _matmul_gather_model()
    targets, skipped = find_targets(model, min_values=1)
    assert {t.node: t.kind for t in targets} == {"embed": "gather", "proj": "matmul", "lm_head": "matmul"} and not skipped
    assert next(t for t in targets if t.node == "lm_head").tied_to == "embed"
    inits = {i.name: i for i in model.graph.initializer}
    quantized = {t.node: quantize(weight_nk(inits, t), bits, block)[0] for t in targets}
    out = rewrite(model, targets, quantized, {t.node: Choice(bits, block, accuracy_level=0) for t in targets})
    onnx.checker.check_model(out)
    ops = [n.op_type for n in out.graph.node]
    assert ops.count("MatMulNBits") == 2 and ops.count("GatherBlockQuantized") == 1 and "MatMul" not in ops
    # the tied head reads the embedding's table: stored once
    assert len([i for i in out.graph.initializer if i.name.endswith(".qweight")]) == 2
    # reference: the float graph with every weight replaced by its dequantized value
    ref = onnx.ModelProto()
    ref.CopyFrom(model)
    deq = {"E": quantized["embed"].dequantize(), "W": quantized["proj"].dequantize().T, "H": quantized["lm_head"].dequantize().T}
    for i in ref.graph.initializer:
        i.CopyFrom(numpy_helper.from_array(np.ascontiguousarray(deq[i.name]), i.name))
    ids = np.array([[0, 5, 127, 3]], np.int64)
    got, want = _session(out).run(None, {"ids": ids}), _session(ref).run(None, {"ids": ids})
    for a, b in zip(got, want):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4 * np.abs(b).max())
    # and it is lossy against the float model: the comparison above can tell weights apart
    plain = _session(model).run(None, {"ids": ids})
    assert max(np.abs(a - b).max() for a, b in zip(got, plain)) > 1e-4


def test_untied_head_keeps_its_own_table():
    model = _matmul_gather_model(tied=False)
    targets, _ = find_targets(model, min_values=1)
    assert all(t.tied_to is None for t in targets)
    inits = {i.name: i for i in model.graph.initializer}
    quantized = {t.node: quantize(weight_nk(inits, t), 4, 32)[0] for t in targets}
    out = rewrite(model, targets, quantized, {t.node: Choice(4, 32) for t in targets})
    assert len([i for i in out.graph.initializer if i.name.endswith(".qweight")]) == 3


def test_gptq_beats_rounding_on_correlated_activations():
    from hewn.passes.quant.weight_only.gptq import gptq, output_error
    rng = np.random.default_rng(0)
    k, n = 128, 96
    x = (rng.standard_normal((512, 16)) @ rng.standard_normal((16, k)) + 0.1 * rng.standard_normal((512, k))).astype(np.float32)
    w = (rng.standard_normal((n, k)) * 0.05).astype(np.float32)
    h = x.T.astype(np.float64) @ x
    rounded, _ = quantize(w, 4, 32, importance=np.diag(h))
    blocks, err = gptq(w, h, 4, 32)
    assert err == pytest.approx(output_error(w, blocks, h), rel=1e-3)
    assert err < output_error(w, rounded, h) / 3
    # the emitted kernel computes what the blocks say
    assert blocks.q.max() <= 15 and blocks.dequantize().shape == w.shape
