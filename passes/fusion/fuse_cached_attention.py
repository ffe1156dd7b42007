"""FuseCachedAttention: a decoder's attention over its KV cache, as torch exports it, becomes one
ONNX `Attention` node (opset 23), which ONNX Runtime's CPU kernel runs with grouped KV heads.

Matched per Softmax (the pattern of transformers' sdpa/eager attention under torch.onnx.export):
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

Works on the ModelProto itself (weights may stay in external data: nothing here reads them) and
upgrades the opset to 23 with onnx's version converter first. The caller verifies the result
against the unfused model; what does not match is left as it was, with the reason.
"""
from __future__ import annotations

import numpy as np
import onnx
from hewn.passes.fusion.proto_index import (
    ProtoIndex,
    attr,
    drop_dead,
    replace_producers,
    upgrade_for,
)
from onnx import helper

ATTENTION_OPSET = 23


def match(softmax, ix: ProtoIndex) -> tuple[dict | None, str]:
    if int(attr(softmax, "axis", -1)) not in (-1, 3):
        return None, "Softmax is not over the last axis"
    scores, mask = softmax.input[0], None
    add = ix.made_by(scores, "Add")
    if add is not None:
        first = ix.made_by(ix.unscale(add.input[0])[0], "MatMul") is not None
        scores, mask = (add.input[0], add.input[1]) if first else (add.input[1], add.input[0])
    scores, c = ix.unscale(scores)
    qk = ix.made_by(scores, "MatMul")
    if qk is None:
        return None, "no Q·Kᵀ MatMul before the Softmax (a soft-capped or otherwise transformed score is not fused)"
    q, cq = ix.unscale(qk.input[0])
    kt, ck = ix.unscale(qk.input[1])
    tr = ix.made_by(kt, "Transpose")
    if tr is None or list(attr(tr, "perm", [])) != [0, 1, 3, 2]:
        return None, "K is not transposed [0, 1, 3, 2] into the score MatMul"
    k_rep, ck2 = ix.unscale(tr.input[0])
    k, k_repeated = ix.unrepeat(k_rep)
    probs = softmax.output[0]
    readers = ix.readers[probs]
    guard = [n for n in readers if n.op_type == "IsNaN"]
    if guard:
        where = [n for n in readers if n.op_type == "Where"]
        if len(guard) != 1 or len(where) != 1 or len(readers) != 2 or where[0].input[0] != guard[0].output[0] \
                or where[0].input[2] != probs or ix.scalar(where[0].input[1]) != 0.0:
            return None, "the Softmax output has readers other than its IsNaN guard"
        probs = where[0].output[0]
    readers = ix.readers[probs]
    if len(readers) != 1 or readers[0].op_type != "MatMul" or readers[0].input[0] != probs:
        return None, "the Softmax output is not multiplied by V alone"
    pv = readers[0]
    v, v_repeated = ix.unrepeat(pv.input[1])
    if k_repeated != v_repeated:
        return None, "K and V are not repeated alike across heads"
    if mask is not None:
        sel = ix.made_by(mask, "Where")
        if sel is not None and ix.scalar(sel.input[1]) == 0.0 and ix.scalar(sel.input[2]) == -np.inf:
            mask = sel.input[0]   # bool, True = attend: what Attention takes as a boolean mask
    return {"softmax": softmax, "q": q, "k": k, "v": v, "mask": mask, "scale": c * cq * ck * ck2,
            "output": pv.output[0], "grouped": k_repeated,
            "repeated": [t for t in (k_rep, pv.input[1]) if k_repeated]}, ""


def fuse_cached_attention(model: onnx.ModelProto) -> tuple[onnx.ModelProto, dict]:
    """The model with each matched attention as one Attention node, and a report (fused count,
    what was left and why). Returns the model unchanged (no opset upgrade) when nothing matches."""
    found, left = _match_all(model)
    report = {"fused": len(found), "grouped_kv": sum(1 for m in found if m["grouped"]), "left": left}
    if not found:
        return model, report
    model, found = upgrade_for(model, ATTENTION_OPSET, report, found, lambda m: _match_all(m)[0])

    def attention(node, m):
        inputs = [m["q"], m["k"], m["v"]] + ([m["mask"]] if m["mask"] is not None else [])
        return [helper.make_node("Attention", inputs, [m["output"]], name=f"{m['softmax'].name}/Attention",
                                 scale=float(m["scale"]))]

    replace_producers(model, found, "MatMul", attention)
    report["shapes_reread"] = _reread_shapes(model.graph, found)
    drop_dead(model.graph)
    return model, report


def _reread_shapes(graph: onnx.GraphProto, found: list[dict]) -> int:
    """The exporter reads the output reshape's sizes off repeat_kv's result (Shape -> Gather of
    batch, heads or head size), which would keep that whole chain alive after the fusion. Those
    three sizes are the query's too ([B, Hq, S, D] against [B, Hq, T, D]): read them there."""
    ix = ProtoIndex(graph)
    moved = 0
    for m in found:
        for rep in m["repeated"]:
            for shape in ix.readers[rep]:
                if shape.op_type != "Shape" or len(shape.attribute):
                    continue
                gathers = ix.readers[shape.output[0]]
                if gathers and all(g.op_type == "Gather" and g.input[0] == shape.output[0]
                                   and ix.const(g.input[1]) is not None
                                   and ix.const(g.input[1]).reshape(-1).tolist() in ([0], [1], [3], [-1])
                                   for g in gathers):
                    shape.input[0] = m["q"]
                    moved += 1
    return moved


def _match_all(model: onnx.ModelProto) -> tuple[list[dict], list[dict]]:
    ix = ProtoIndex(model.graph)
    found, left = [], []
    for node in model.graph.node:
        if node.op_type == "Softmax":
            m, why = match(node, ix)
            (found.append(m) if m else left.append({"node": node.name, "reason": why}))
    return found, left


__all__ = ["ATTENTION_OPSET", "fuse_cached_attention", "match"]
