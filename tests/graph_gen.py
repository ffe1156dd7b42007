"""A hypothesis strategy for random valid ONNX graphs from the op set hewn's passes handle:
Conv (plain, grouped, depthwise, strided), BatchNormalization, activations, residual Add,
per-channel Mul/Add, Concat, pooling, Reshape/Transpose round trips, shape arithmetic, Identity,
dead branches, and Gemm/MatMul heads; one or two outputs.

Shapes are drawn (so hypothesis shrinks a failure to the fewest, smallest ops); weight values
come from a drawn seed, scaled by 1/sqrt(fan-in) so activations stay near unit size.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

OPSET = 17


@dataclass(frozen=True)
class Value:
    name: str
    c: int
    h: int
    w: int


class _Builder:
    def __init__(self, seed: int):
        self.rng = np.random.default_rng(seed)
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.count = 0

    def fresh(self, stem: str) -> str:
        self.count += 1
        return f"{stem}{self.count}"

    def const(self, array: np.ndarray, stem: str) -> str:
        name = self.fresh(stem)
        self.inits.append(numpy_helper.from_array(np.asarray(array), name))
        return name

    def normal(self, shape, scale) -> np.ndarray:
        return (self.rng.standard_normal(shape) * scale).astype(np.float32)

    def node(self, op: str, inputs: list[str], stem: str, n_out: int = 1, **attrs) -> list[str]:
        outputs = [self.fresh(stem) for _ in range(n_out)]
        self.nodes.append(helper.make_node(op, inputs, outputs, name=self.fresh(op.lower() + "_"), **attrs))
        return outputs


def _conv(b: _Builder, draw, t: Value) -> Value:
    kind = draw(st.sampled_from(["plain", "plain", "depthwise", "grouped"]))
    k = draw(st.sampled_from([1, 3]))
    stride = draw(st.sampled_from([1, 1, 2])) if min(t.h, t.w) >= 4 else 1
    groups = 1
    if kind == "depthwise":
        groups, out = t.c, t.c * draw(st.sampled_from([1, 2]))
    elif kind == "grouped":
        divisors = [g for g in range(2, t.c) if t.c % g == 0]
        groups = draw(st.sampled_from(divisors)) if divisors else 1
        out = groups * draw(st.integers(1, 3))
    else:
        out = draw(st.integers(1, 8))
    fan_in = t.c // groups * k * k
    weight = b.normal((out, t.c // groups, k, k), fan_in ** -0.5)
    zeroed = draw(st.integers(0, out - 1)) if out > 1 and draw(st.booleans()) else 0
    weight[:zeroed] = 0  # filters a sparse training left at zero: dead channels to find
    inputs = [t.name, b.const(weight, "w")]
    if draw(st.booleans()):
        bias = b.normal((out,), 0.1)
        bias[:zeroed] = 0 if draw(st.booleans()) else bias[:zeroed]
        inputs.append(b.const(bias, "b"))
    pad = k // 2
    (y,) = b.node("Conv", inputs, "conv", kernel_shape=[k, k], pads=[pad] * 4, strides=[stride] * 2, group=groups)
    size = lambda n: (n + 2 * pad - k) // stride + 1  # noqa: E731
    return Value(y, out, size(t.h), size(t.w))


def _conv_block(b: _Builder, draw, t: Value) -> Value:
    """Conv, then BatchNormalization and an activation, as exported CNNs are built."""
    y = _conv(b, draw, t)
    if draw(st.booleans()):
        y = _batchnorm(b, draw, y)
    if draw(st.booleans()):
        y = _activation(b, draw, y)
    return y


def _batchnorm(b: _Builder, draw, t: Value) -> Value:
    c = t.c
    scale = b.rng.uniform(0.5, 1.5, c).astype(np.float32)
    var = b.rng.uniform(0.5, 1.5, c).astype(np.float32)
    names = [b.const(scale, "bn_s"), b.const(b.normal((c,), 0.1), "bn_b"), b.const(b.normal((c,), 0.1), "bn_m"),
             b.const(var, "bn_v")]
    (y,) = b.node("BatchNormalization", [t.name, *names], "bn", epsilon=1e-5)
    return Value(y, t.c, t.h, t.w)


def _activation(b: _Builder, draw, t: Value) -> Value:
    op = draw(st.sampled_from(["Relu", "LeakyRelu", "Sigmoid", "Clip", "HardSwish", "Tanh"]))
    if op == "Clip":  # bounds as scalars or, as some exporters write them, shape [1]
        shape = draw(st.sampled_from([(), (1,)]))
        (y,) = b.node("Clip", [t.name, b.const(np.zeros(shape, np.float32), "lo"),
                               b.const(np.full(shape, 6, np.float32), "hi")], "clip")
    elif op == "LeakyRelu":
        (y,) = b.node(op, [t.name], "act", alpha=0.1)
    else:
        (y,) = b.node(op, [t.name], "act")
    return Value(y, t.c, t.h, t.w)


def _add(b: _Builder, draw, t: Value, live: list[Value]) -> Value:
    partners = [v for v in live if (v.c, v.h, v.w) == (t.c, t.h, t.w)]
    if draw(st.booleans()) and partners:  # residual: two tensors of one shape
        other = draw(st.sampled_from(partners)).name
    else:  # per-channel constant, as exporters write biases and scales
        other = b.const(b.normal((t.c, 1, 1), 0.5), "k")
    op = draw(st.sampled_from(["Add", "Add", "Mul", "Sub"]))
    (y,) = b.node(op, [t.name, other], op.lower())
    return Value(y, t.c, t.h, t.w)


def _concat(b: _Builder, draw, t: Value, live: list[Value]) -> Value:
    partners = [v for v in live if (v.h, v.w) == (t.h, t.w)]
    other = draw(st.sampled_from(partners))
    (y,) = b.node("Concat", [t.name, other.name], "cat", axis=1)
    return Value(y, t.c + other.c, t.h, t.w)


def _pool(b: _Builder, draw, t: Value) -> Value:
    op = draw(st.sampled_from(["MaxPool", "AveragePool"]))
    if draw(st.booleans()) and t.h % 2 == 0 and t.w % 2 == 0:
        (y,) = b.node(op, [t.name], "pool", kernel_shape=[2, 2], strides=[2, 2])
        return Value(y, t.c, t.h // 2, t.w // 2)
    (y,) = b.node(op, [t.name], "pool", kernel_shape=[3, 3], pads=[1, 1, 1, 1])
    return Value(y, t.c, t.h, t.w)


def _transpose_pair(b: _Builder, draw, t: Value) -> Value:
    perm = draw(st.permutations([0, 1, 2, 3]))
    inverse = list(np.argsort(perm))
    (mid,) = b.node("Transpose", [t.name], "tp", perm=list(perm))
    (y,) = b.node("Transpose", [mid], "tp", perm=[int(i) for i in inverse])
    return Value(y, t.c, t.h, t.w)


def _reshape_pair(b: _Builder, draw, t: Value) -> Value:
    flat = b.const(np.array([1, -1], np.int64), "shape")
    (mid,) = b.node("Reshape", [t.name, flat], "flat")
    back = b.const(np.array([1, t.c, t.h, t.w], np.int64), "shape")
    (y,) = b.node("Reshape", [mid, back], "unflat")
    return Value(y, t.c, t.h, t.w)


def _shape_reshape(b: _Builder, draw, t: Value) -> Value:
    """Reshape to its own shape, computed by Shape -> Gather/Concat: foldable shape arithmetic."""
    (shape,) = b.node("Shape", [t.name], "shape")
    (head,) = b.node("Gather", [shape, b.const(np.array([0, 1], np.int64), "idx")], "head", axis=0)
    (target,) = b.node("Concat", [head, b.const(np.array([t.h, t.w], np.int64), "hw")], "target", axis=0)
    (y,) = b.node("Reshape", [t.name, target], "reshape")
    return Value(y, t.c, t.h, t.w)


def _identity(b: _Builder, draw, t: Value) -> Value:
    (y,) = b.node("Identity", [t.name], "id")
    return Value(y, t.c, t.h, t.w)


def _dead(b: _Builder, draw, t: Value) -> None:
    """A branch nothing reads."""
    b.node("Relu", [t.name], "dead")
    return None


UNARY = {"conv": _conv, "conv_block": _conv_block, "batchnorm": _batchnorm, "activation": _activation, "pool": _pool,
         "transpose_pair": _transpose_pair, "reshape_pair": _reshape_pair, "shape_reshape": _shape_reshape,
         "identity": _identity, "dead": _dead}
BINARY = {"add": _add, "concat": _concat}
OPS = ["conv", "conv_block", "conv_block", "batchnorm", "activation", "activation", "add", "add", "concat", "pool",
       "transpose_pair", "reshape_pair", "shape_reshape", "identity", "dead"]


def _head(b: _Builder, draw, t: Value, allow_tensor: bool = True) -> tuple[str, list[int]]:
    kind = draw(st.sampled_from(["gemm", "matmul", "flatten_gemm"] + (["tensor"] if allow_tensor else [])))
    if kind == "tensor":
        return t.name, [1, t.c, t.h, t.w]
    if kind == "flatten_gemm":
        (flat,) = b.node("Flatten", [t.name], "flat")
        features = t.c * t.h * t.w
    else:
        (pooled,) = b.node("GlobalAveragePool", [t.name], "gap")
        (flat,) = b.node("Flatten", [pooled], "flat")
        features = t.c
    n = draw(st.integers(1, 6))
    if kind == "matmul":
        (mm,) = b.node("MatMul", [flat, b.const(b.normal((features, n), features ** -0.5), "fc_w")], "mm")
        (y,) = b.node("Add", [mm, b.const(b.normal((n,), 0.1), "fc_b")], "logits")
    else:
        trans_b = draw(st.sampled_from([0, 1]))
        shape = (n, features) if trans_b else (features, n)
        (y,) = b.node("Gemm", [flat, b.const(b.normal(shape, features ** -0.5), "fc_w"),
                                b.const(b.normal((n,), 0.1), "fc_b")], "logits", transB=trans_b)
    return y, [1, n]


@st.composite
def cnn_graphs(draw, max_ops: int = 8, head: bool | None = None) -> onnx.ModelProto:
    """A random CNN-like ONNX model (batch 1, opset 17). head=True forces a Gemm/MatMul classifier
    (so inner channels are prunable), False a raw tensor output, None either."""
    b = _Builder(draw(st.integers(0, 2**20)))
    c, hw = draw(st.integers(1, 6)), draw(st.sampled_from([3, 4, 6, 8]))
    live = [Value("x", c, hw, hw)]
    for _ in range(draw(st.integers(1, max_ops))):
        op = draw(st.sampled_from(OPS))
        t = draw(st.sampled_from(live[-3:]))  # mostly recent tensors: deep chains more than wide fans
        new = BINARY[op](b, draw, t, live) if op in BINARY else UNARY[op](b, draw, t)
        if new is not None:
            live.append(new)
    last = live[-1]
    if head is True:
        out, shape = _head(b, draw, last, allow_tensor=False)
    elif head is False:
        out, shape = last.name, [1, last.c, last.h, last.w]
    else:
        out, shape = _head(b, draw, last)
    outputs = [helper.make_tensor_value_info(out, TensorProto.FLOAT, shape)]
    if len(live) > 2 and draw(st.booleans()):  # a second output from inside the graph
        extra = draw(st.sampled_from(live[1:-1]))
        if extra.name != out:
            outputs.append(helper.make_tensor_value_info(extra.name, TensorProto.FLOAT,
                                                         [1, extra.c, extra.h, extra.w]))
    graph = helper.make_graph(b.nodes, "random_cnn", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                                                   [1, c, hw, hw])],
                              outputs, b.inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], ir_version=8)
    onnx.checker.check_model(model, full_check=True)
    return model



def _layer_norm(b: _Builder, x: str, d: int, opset: int) -> str:
    """LayerNormalization from opset 17, else the decomposition exporters write (ReduceMean, Pow, Sqrt...)."""
    gamma, beta = b.const(1 + b.normal((d,), 0.1), "ln_g"), b.const(b.normal((d,), 0.1), "ln_b")
    if opset >= 17:
        return b.node("LayerNormalization", [x, gamma, beta], "ln", axis=-1, epsilon=1e-5)[0]
    (mean,) = b.node("ReduceMean", [x], "mean", axes=[-1])
    (centered,) = b.node("Sub", [x, mean], "centered")
    (sq,) = b.node("Pow", [centered, b.const(np.array(2.0, np.float32), "two")], "sq")
    (var,) = b.node("ReduceMean", [sq], "var", axes=[-1])
    (eps,) = b.node("Add", [var, b.const(np.array(1e-5, np.float32), "eps")], "vareps")
    (std,) = b.node("Sqrt", [eps], "std")
    (normed,) = b.node("Div", [centered, std], "normed")
    (scaled,) = b.node("Mul", [normed, gamma], "scaled")
    return b.node("Add", [scaled, beta], "ln")[0]


def _attention(b: _Builder, draw, x: str, s: int, d: int, heads: int, mask: str | None) -> str:
    """Multi-head self-attention as exporters write it: Q/K/V MatMuls, head reshapes, Q·Kᵀ scaled,
    an optional additive mask, Softmax, ·V, the heads merged back, an output projection."""
    hd = d // heads

    def proj(stem):
        (mm,) = b.node("MatMul", [x, b.const(b.normal((d, d), d ** -0.5), f"{stem}_w")], stem)
        (biased,) = b.node("Add", [mm, b.const(b.normal((d,), 0.1), f"{stem}_b")], f"{stem}_b")
        (split,) = b.node("Reshape", [biased, b.const(np.array([1, s, heads, hd], np.int64), "hs")], f"{stem}_h")
        return b.node("Transpose", [split], f"{stem}_t", perm=[0, 2, 1, 3])[0]

    q, k, v = proj("q"), proj("k"), proj("v")
    (kt,) = b.node("Transpose", [k], "kt", perm=[0, 1, 3, 2])
    (scores,) = b.node("MatMul", [q, kt], "scores")
    (scores,) = b.node("Mul", [scores, b.const(np.array(hd ** -0.5, np.float32), "scale")], "scaled_scores")
    if mask is not None:
        (scores,) = b.node("Add", [scores, mask], "masked")
    (probs,) = b.node("Softmax", [scores], "probs", axis=-1)
    (ctx,) = b.node("MatMul", [probs, v], "ctx")
    (merged,) = b.node("Transpose", [ctx], "merged", perm=[0, 2, 1, 3])
    (flat,) = b.node("Reshape", [merged, b.const(np.array([1, s, d], np.int64), "sd")], "flat")
    return b.node("MatMul", [flat, b.const(b.normal((d, d), d ** -0.5), "o_w")], "attn_out")[0]


def _gelu(b: _Builder, x: str) -> str:
    (scaled,) = b.node("Div", [x, b.const(np.array(2 ** 0.5, np.float32), "sqrt2")], "gelu_in")
    (erf,) = b.node("Erf", [scaled], "erf")
    (one,) = b.node("Add", [erf, b.const(np.array(1.0, np.float32), "one")], "erf1")
    (half,) = b.node("Mul", [x, one], "gelu_x")
    return b.node("Mul", [half, b.const(np.array(0.5, np.float32), "half")], "gelu")[0]


@st.composite
def transformer_graphs(draw) -> onnx.ModelProto:
    """A random transformer encoder (1-2 blocks: LayerNorm, attention with an optional padding
    mask, residual Adds, GELU MLP) at opset 11, 12, 13 or 17, as exporters write them."""
    opset = draw(st.sampled_from([11, 12, 13, 17]))
    b = _Builder(draw(st.integers(0, 2**20)))
    heads = draw(st.sampled_from([1, 2]))
    d, s = heads * draw(st.sampled_from([4, 8])), draw(st.sampled_from([3, 5]))
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, s, d])]
    mask = None
    if draw(st.booleans()):
        inputs.append(helper.make_tensor_value_info("mask", TensorProto.FLOAT, [1, 1, 1, s]))
        (inv,) = b.node("Sub", [b.const(np.array(1.0, np.float32), "one"), "mask"], "inv")
        (mask,) = b.node("Mul", [inv, b.const(np.array(-10000.0, np.float32), "big")], "bias")
    x = "x"
    for _ in range(draw(st.integers(1, 2))):
        (x,) = b.node("Add", [x, _attention(b, draw, _layer_norm(b, x, d, opset), s, d, heads, mask)], "res")
        hidden = d * draw(st.sampled_from([2, 4]))
        (up,) = b.node("MatMul", [_layer_norm(b, x, d, opset), b.const(b.normal((d, hidden), d ** -0.5), "up")], "up")
        (down,) = b.node("MatMul", [_gelu(b, up), b.const(b.normal((hidden, d), hidden ** -0.5), "down")], "down")
        (x,) = b.node("Add", [x, down], "res")
    graph = helper.make_graph(b.nodes, "random_transformer", inputs,
                              [helper.make_tensor_value_info(x, TensorProto.FLOAT, [1, s, d])], b.inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=7)
    onnx.checker.check_model(model, full_check=True)
    return model
