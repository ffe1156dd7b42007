"""FuseAttention: self-attention written out in standard ops -> one packed QKV MatMul and ORT's
MultiHeadAttention kernel (com.microsoft), for the patterns ORT's own fusion does not know
(torch's scaled_dot_product_attention export: Q and K each scaled by d^-1/4, a boolean mask
turned into an additive -inf bias, an IsNaN guard after Softmax).

Matched per Softmax (the score chain is match.score_chain, which FuseCachedAttention shares):
    q/k/v = Add(MatMul(x, W*), b*) -> Reshape [.., N, H] -> Transpose        (same x: self-attention)
    scores = MatMul(q [* c_q], kT [* c_k]) [/ or * c] [+ bias]
    probs = Softmax(scores) [-> Where(IsNaN(probs), 0, probs)]
    out = MatMul(probs, v) -> Transpose/Reshape chain back to [B, S, N*H]
becomes  Split(Add(MatMul(x, [Wq|Wk|Wv]), [bq|bk|bv])) -> MultiHeadAttention(q, k, v, attention_bias).
The output chain is checked by replaying it on an index array, not by trusting op names; the
IsNaN guard only differs for a query whose every key is masked (no real input has that).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx_graphsurgeon as gs
from hewn.core.graph_utils import const_value
from hewn.core.pass_infra import Pass, PassResult
from hewn.passes.fusion.match import const, producer, score_chain
from hewn.passes.analysis.shape_inference import ShapeInfo


@dataclass
class _Match:
    softmax: gs.Node
    x: gs.Tensor
    weights: list[np.ndarray]
    biases: list[np.ndarray]
    heads: int
    head_size: int
    scale: float
    bias: gs.Tensor | None
    output: gs.Tensor
    expand_bias_to: int = 0   # a mask broadcast over the queries ([B, N, 1, T]) is expanded to this S


def _projection(t: gs.Tensor, perm: list[int]):
    """Transpose(perm) of Reshape(Add(MatMul(x, W), b), [.., N, H]): (x, W, b, N, H)."""
    tr = producer(t, "Transpose")
    if tr is None or list(tr.attrs.get("perm", [])) != perm:
        return None
    rs = producer(tr.inputs[0], "Reshape")
    shape = const(rs.inputs[1]) if rs is not None else None
    if shape is None or len(shape) != 4 or shape[3] <= 0:
        return None
    add = producer(rs.inputs[0], "Add")
    if add is None:
        return None
    for i in (0, 1):
        b, mm = const_value(add.inputs[i]), producer(add.inputs[1 - i], "MatMul")
        if b is not None and mm is not None and b.ndim == 1:
            w = const_value(mm.inputs[1])
            size = int(shape[3])
            heads = int(shape[2]) if shape[2] > 0 else b.shape[0] // size  # -1: inferred from the width
            if w is not None and w.ndim == 2 and w.shape[1] == b.shape[0] == heads * size:
                return mm.inputs[0], w, b, heads, size
    return None


def _replays_merge(chain: list[gs.Node], info: ShapeInfo, heads: int, seq: int, size: int) -> bool:
    """Does the Reshape/Transpose chain turn [B, N, S, H] into [B, S, N*H] (checked with B = 1)?"""
    x = np.arange(heads * seq * size).reshape(1, heads, seq, size)
    want = x.transpose(0, 2, 1, 3).reshape(1, seq, heads * size)
    for node in chain:
        if node.op == "Transpose":
            x = x.transpose(node.attrs.get("perm"))
        else:
            shape = info.shape(node.outputs[0].name)
            if shape is None or any(not isinstance(d, int) for d in shape[1:]):
                return False
            x = x.reshape((1, *shape[1:]))
    return x.shape == want.shape and np.array_equal(x, want)


def _merge_chain(t: gs.Tensor, info: ShapeInfo, heads: int, seq: int, size: int) -> gs.Tensor | None:
    chain, cur = [], t
    while len(cur.outputs) == 1 and cur.outputs[0].op in ("Transpose", "Reshape") and len(chain) < 4:
        chain.append(cur.outputs[0])
        cur = cur.outputs[0].outputs[0]
        shape = info.shape(cur.name)
        if shape is not None and len(shape) == 3 and shape[-1] == heads * size and _replays_merge(chain, info, heads,
                                                                                                  seq, size):
            return cur
    return None


def match(softmax: gs.Node, info: ShapeInfo) -> tuple[_Match | None, str]:
    s, why = score_chain(softmax)
    if s is None:
        return None, why
    q, k = _projection(s.q, [0, 2, 1, 3]), _projection(s.k, [0, 2, 3, 1])
    if q is None or k is None:
        return None, "Q or K is not a biased MatMul reshaped to heads"
    pv, bias = s.pv, s.mask
    v = _projection(pv.inputs[1], [0, 2, 1, 3])
    if v is None:
        return None, "V is not a biased MatMul reshaped to heads"
    if not (q[0] is k[0] is v[0]):
        return None, "Q, K and V read different inputs (cross-attention is not fused)"
    heads, size = q[3], q[4]
    if (k[3], k[4]) != (heads, size) or (v[3], v[4]) != (heads, size):
        return None, "Q, K and V have different head layouts"
    if bias is not None:
        shape = info.shape(bias.name)
        if shape is None or len(shape) != 4 or shape[1] not in (1, heads):
            return None, f"the additive mask has shape {shape}, not [B|1, N|1, S, S]"
    seq = (info.shape(pv.outputs[0].name) or (None,) * 4)[2]
    if not isinstance(seq, int):
        return None, "the sequence length is symbolic (the output reshape cannot be checked)"
    out = _merge_chain(pv.outputs[0], info, heads, seq, size)
    if out is None:
        return None, "the attention output is not merged back to [B, S, N*H] by Transpose/Reshape"
    expand = 0
    if bias is not None and shape[2] != seq:
        if shape[2] != 1:
            return None, f"the additive mask has shape {shape}: its query axis is neither {seq} nor 1"
        expand = seq   # ORT's MultiHeadAttention takes the bias per query: [B|1, N|1, S, T]
    return _Match(softmax, q[0], [q[1], k[1], v[1]], [q[2], k[2], v[2]], heads, size, s.scale, bias,
                  out, expand), ""


class FuseAttention(Pass):
    name = "fuse_attention"
    requires = (ShapeInfo,)

    @dataclass(frozen=True)
    class Config:
        pass

    def run(self, graph: gs.Graph, ctx) -> PassResult:
        softmaxes = [n for n in graph.nodes if n.op == "Softmax"]
        if not softmaxes:
            return PassResult(False, {"attention_blocks": 0})
        info = ctx.analysis(ShapeInfo, graph)
        fused = []
        for node in softmaxes:
            found, why = match(node, info)
            if found is None:
                ctx.note(self.name, node.name, f"attention left unfused: {why}")
                continue
            self._rewrite(graph, found, ctx)
            fused.append(node.name)
        if not fused:
            return PassResult(False, {"attention_blocks": 0})
        graph.cleanup().toposort()
        return PassResult(True, {"attention_blocks": len(fused), "into": "MatMul(QKV packed) + MultiHeadAttention"})

    def _rewrite(self, graph: gs.Graph, m: _Match, ctx) -> None:
        name = lambda role: ctx.names.make(self.name, m.softmax.name, role)
        hidden = m.heads * m.head_size
        w = gs.Constant(name("qkv_weight"), np.concatenate(m.weights, axis=1).astype(np.float32))
        b = gs.Constant(name("qkv_bias"), np.concatenate(m.biases).astype(np.float32))
        dtype = np.float32
        mm = gs.Variable(name("qkv_matmul"), dtype=dtype)
        qkv = gs.Variable(name("qkv"), dtype=dtype)
        parts = [gs.Variable(name(r), dtype=dtype) for r in ("q", "k", "v")]
        sizes = [hidden] * 3
        if graph.opset >= 13:   # the sizes became an input in opset 13; an attribute before it
            split = gs.Node("Split", name("Split"), attrs={"axis": -1},
                            inputs=[qkv, gs.Constant(name("split"), np.array(sizes, np.int64))], outputs=parts)
        else:
            split = gs.Node("Split", name("Split"), attrs={"axis": -1, "split": sizes}, inputs=[qkv], outputs=parts)
        nodes = [gs.Node("MatMul", name("qkv_MatMul"), inputs=[m.x, w], outputs=[mm]),
                 gs.Node("Add", name("qkv_Add"), inputs=[mm, b], outputs=[qkv]), split]
        inputs = [*parts]
        if m.bias is not None:
            bias = m.bias
            if m.expand_bias_to:
                bias = gs.Variable(name("attention_bias"), dtype=dtype)
                shape = gs.Constant(name("bias_shape"), np.array([1, 1, m.expand_bias_to, 1], np.int64))
                nodes.append(gs.Node("Expand", name("Expand"), inputs=[m.bias, shape], outputs=[bias]))
            empty = gs.Variable.empty()
            inputs += [empty, empty, bias]   # bias, key_padding_mask unused; attention_bias
        out = m.output
        out.inputs.clear()
        nodes.append(gs.Node("MultiHeadAttention", name("MultiHeadAttention"), domain="com.microsoft",
                             attrs={"num_heads": m.heads, "scale": float(m.scale)}, inputs=inputs, outputs=[out]))
        graph.nodes.extend(nodes)
        _import_contrib_domain(graph)


def _import_contrib_domain(graph: gs.Graph) -> None:
    import onnx

    domains = graph.import_domains or [onnx.helper.make_opsetid("", graph.opset)]
    if not any(d.domain == "com.microsoft" for d in domains):
        graph.import_domains = [*domains, onnx.helper.make_opsetid("com.microsoft", 1)]
