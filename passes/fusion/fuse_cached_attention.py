"""FuseCachedAttention: a decoder's attention over its KV cache, as torch exports it, becomes one
ONNX `Attention` node (opset 23), which ONNX Runtime's CPU kernel runs with grouped KV heads.

Matched per Softmax (the pattern of transformers' sdpa/eager attention under torch.onnx.export;
the score chain is match.score_chain, the one FuseAttention uses too):
    k_all, v_all = Concat(past, new)                       (the present.* outputs; not touched)
    k_rep = Reshape(Expand(Unsqueeze(k_all, [2])))         (repeat_kv for grouped heads; optional)
    scores = MatMul(q [* c_q], Transpose(k_rep, [0,1,3,2]) [* c_k]) [* or / c]  [+ mask]
    probs = Softmax(scores, -1) [-> Where(IsNaN(probs), 0, probs)]
    out = MatMul(probs, v_rep)
becomes  out = Attention(q, k_all, v_all, mask, scale=c_q*c_k*c): query head h reads KV head
h // n_rep, exactly what repeat_kv's interleave does. A mask Where(bool, 0, -inf) is handed over
as the bool itself. ORT's kernel gives 0 for a query whose every key is masked, as the IsNaN
guard does. On Gemma-3 this removes ~45 executed nodes per layer (repeat_kv's shape arithmetic
dominates), which is most of a decode step's per-node overhead.

Nothing here reads a weight (they may stay on disk). An older graph is upgraded to opset 23 with
onnx's version converter when something matches. Verified by the caller against the unfused
graph (the pass manager checks it); what does not match is left, with the reason.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx_graphsurgeon as gs
from hewn.core.pass_infra import Pass, PassResult
from hewn.passes.fusion.match import const, matches_at, producer, scalar, score_chain, unrepeat, unscale

ATTENTION_OPSET = 23


@dataclass
class _Match:
    softmax: gs.Node
    q: gs.Tensor
    k: gs.Tensor
    v: gs.Tensor
    mask: gs.Tensor | None
    scale: float
    output: gs.Tensor
    grouped: bool
    repeated: list[gs.Tensor]   # repeat_kv's results, whose Shape readers move to q


def match(softmax: gs.Node) -> tuple[_Match | None, str]:
    s, why = score_chain(softmax)
    if s is None:
        return None, why
    tr = producer(s.k, "Transpose")
    if tr is None or list(tr.attrs.get("perm", [])) != [0, 1, 3, 2]:
        return None, "K is not transposed [0, 1, 3, 2] into the score MatMul"
    k_rep, ck2 = unscale(tr.inputs[0])
    k, k_repeated = unrepeat(k_rep)
    v_rep = s.pv.inputs[1]
    v, v_repeated = unrepeat(v_rep)
    if k_repeated != v_repeated:
        return None, "K and V are not repeated alike across heads"
    mask = s.mask
    if mask is not None and _one_row(mask):
        return None, ("the mask has one row for all query positions (it broadcasts over them); ORT's Attention "
                      "kernel takes one row per query")
    sel = producer(mask, "Where")
    if sel is not None and scalar(sel.inputs[1]) == 0.0 and scalar(sel.inputs[2]) == -np.inf:
        mask = sel.inputs[0]   # bool, True = attend: what Attention takes as a boolean mask
    return _Match(softmax, s.q, k, v, mask, s.scale * ck2, s.pv.outputs[0], k_repeated,
                  [k_rep, v_rep] if k_repeated else []), ""


class FuseCachedAttention(Pass):
    name = "fuse_cached_attention"
    # min_opset stays the default: the pass upgrades the graph to ATTENTION_OPSET itself, and only when
    # something matches (a min_opset here would make compile() upgrade every model)

    @dataclass(frozen=True)
    class Config:
        pass

    def run(self, graph: gs.Graph, ctx) -> PassResult:
        """Stats: fused count, grouped_kv (of them), left (node, reason), opset (when upgraded),
        shapes_reread (Shape readers of repeat_kv moved to the query)."""
        found, left = _match_all(graph)
        stats = {"fused": len(found), "grouped_kv": sum(1 for m in found if m.grouped), "left": left}
        if not found:
            return PassResult(False, stats)
        found = matches_at(graph, ATTENTION_OPSET, ctx, stats, found, lambda g: _match_all(g)[0])
        if found is None:   # the converter refused: nothing fused, the reason in stats
            return PassResult(False, stats)
        for m in found:
            inputs = [m.q, m.k, m.v] + ([m.mask] if m.mask is not None else [])
            m.output.inputs.clear()
            graph.nodes.append(gs.Node("Attention", ctx.names.make(self.name, m.softmax.name, "Attention"),
                                       attrs={"scale": float(m.scale)}, inputs=inputs, outputs=[m.output]))
        stats["shapes_reread"] = _reread_shapes(found)
        graph.cleanup().toposort()
        return PassResult(True, stats)


ELEMENTWISE = {"Add", "Sub", "Mul", "Div", "Where", "Cast", "Not", "And", "Or", "Equal", "Less", "Greater",
               "LessOrEqual", "GreaterOrEqual", "Neg"}


def _one_row(mask: gs.Tensor) -> bool:
    """Whether the mask is known to broadcast over query positions: every tensor it is computed
    from elementwise has a static shape whose second-to-last dim is 1 (or rank < 2). A source
    of unknown shape (a causal mask built from the positions) counts as one row per query."""
    sources, stack, seen = [], [mask], set()
    while stack:
        t = stack.pop()
        if id(t) in seen:
            continue
        seen.add(id(t))
        if t.shape is not None and all(isinstance(d, int) for d in t.shape):
            sources.append(list(t.shape))
            continue
        node = t.inputs[0] if t.inputs else None
        if node is None or node.op not in ELEMENTWISE:
            return False
        stack.extend(i for i in node.inputs if i is not None and i.name)
    return all(len(shape) < 2 or shape[-2] == 1 for shape in sources)


def _reread_shapes(found: list[_Match]) -> int:
    """The exporter reads the output reshape's sizes off repeat_kv's result (Shape -> Gather of
    batch, heads or head size), which would keep that whole chain alive after the fusion. Those
    three sizes are the query's too ([B, Hq, S, D] against [B, Hq, T, D]): read them there."""
    moved = 0
    for m in found:
        for rep in m.repeated:
            for shape in list(rep.outputs):
                if shape.op != "Shape" or shape.attrs:
                    continue
                gathers = shape.outputs[0].outputs
                if gathers and all(g.op == "Gather" and g.inputs[0] is shape.outputs[0]
                                   and _index(g) in ([0], [1], [3], [-1]) for g in gathers):
                    shape.inputs[0] = m.q
                    moved += 1
    return moved


def _index(gather: gs.Node) -> list | None:
    v = const(gather.inputs[1])
    return v.reshape(-1).tolist() if v is not None else None


def _match_all(graph: gs.Graph) -> tuple[list[_Match], list[dict]]:
    found, left = [], []
    for node in graph.nodes:
        if node.op == "Softmax":
            m, why = match(node)
            (found.append(m) if m else left.append({"node": node.name, "reason": why}))
    return found, left


__all__ = ["ATTENTION_OPSET", "FuseCachedAttention", "match"]
