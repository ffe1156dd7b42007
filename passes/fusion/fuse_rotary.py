"""FuseRotary: rotary position embedding written out as transformers' apply_rotary_pos_emb
(x * cos + rotate_half(x) * sin) becomes one ONNX `RotaryEmbedding` node (opset 23).

Matched per Add:
    cos4, sin4 = Unsqueeze(cos, [1]), Unsqueeze(sin, [1])          (cos, sin: [B, S, D], halves equal)
    rot = Concat(Neg(Slice(x, D/2 .. end)), Slice(x, 0 .. D/2), axis -1)
    y = Add(Mul(x, cos4), Mul(rot, sin4))
becomes  y = RotaryEmbedding(x, cos[..., :D/2], sin[..., :D/2]): the halves are cut once per cos/sin
pair and shared by every layer. Gemma-3 has two pairs (local and global theta). Per layer this
removes the ~28 nodes of q's and k's rotation (half of them shape arithmetic for D/2).

Graph only, like fuse_cached_attention; the caller verifies the result numerically (the halves
of cos being equal is how transformers builds them, not something the graph states).
"""
from __future__ import annotations

import onnx
from hewn.passes.fusion.proto_index import (
    ProtoIndex,
    attr,
    drop_dead,
    replace_producers,
    upgrade_for,
)
from onnx import helper

ROTARY_OPSET = 23


def _unsqueezed(ix: ProtoIndex, name: str) -> str | None:
    un = ix.made_by(name, "Unsqueeze")
    if un is None or len(un.input) < 2:
        return None
    axes = ix.const(un.input[1])
    return un.input[0] if axes is not None and axes.reshape(-1).tolist() == [1] else None


def _last_axis(ix: ProtoIndex, node) -> bool:
    axes = ix.const(node.input[3]) if len(node.input) > 3 and node.input[3] else None
    steps = ix.const(node.input[4]) if len(node.input) > 4 and node.input[4] else None
    return axes is not None and axes.reshape(-1).tolist() in ([3], [-1]) and (steps is None or steps.reshape(-1).tolist() == [1])


def _rotated_half(ix: ProtoIndex, name: str) -> str | None:
    """Concat(Neg(Slice(x, h..)), Slice(x, ..h)) over the last axis: x."""
    cat = ix.made_by(name, "Concat")
    if cat is None or len(cat.input) != 2 or int(attr(cat, "axis", 0)) not in (-1, 3):
        return None
    neg = ix.made_by(cat.input[0], "Neg")
    hi = ix.made_by(neg.input[0], "Slice") if neg is not None else None
    lo = ix.made_by(cat.input[1], "Slice")
    if hi is None or lo is None or hi.input[0] != lo.input[0] or not (_last_axis(ix, hi) and _last_axis(ix, lo)):
        return None
    start = ix.const(lo.input[1])
    if start is None or start.reshape(-1).tolist() != [0]:
        return None
    return lo.input[0]


def match(add, ix: ProtoIndex) -> dict | None:
    muls = [ix.made_by(i, "Mul") for i in add.input]
    if len(add.input) != 2 or None in muls:
        return None
    for straight, turned in (muls, muls[::-1]):
        for xi in (0, 1):
            x, cos = straight.input[xi], _unsqueezed(ix, straight.input[1 - xi])
            if cos is None:
                continue
            for ri in (0, 1):
                if _rotated_half(ix, turned.input[ri]) == x:
                    sin = _unsqueezed(ix, turned.input[1 - ri])
                    if sin is not None:
                        return {"add": add, "x": x, "cos": cos, "sin": sin, "output": add.output[0]}
    return None


def fuse_rotary(model: onnx.ModelProto) -> tuple[onnx.ModelProto, dict]:
    found = _match_all(model) if _has_rotary(model) else []
    report = {"fused": len(found)}
    if not found:
        return model, report
    model, found = upgrade_for(model, ROTARY_OPSET, report, found, _match_all)
    halves: dict[str, str] = {}

    def rotary(node, m):
        cut = []
        for t in (m["cos"], m["sin"]):
            if t not in halves:   # t[..., :D/2], cut once, right where it is first needed
                halves[t] = f"{t}/half"
                cut += _half(t, halves[t])
        return cut + [helper.make_node("RotaryEmbedding", [m["x"], halves[m["cos"]], halves[m["sin"]]], [m["output"]],
                                       name=f"{node.name}/RotaryEmbedding")]

    replace_producers(model, found, "Add", rotary)
    drop_dead(model.graph)
    report["tables"] = len(halves) // 2
    return model, report


def _half(t: str, out: str) -> list:
    """t[..., :D/2] with D read from t's shape at run time."""
    c = lambda n, v: helper.make_node("Constant", [], [f"{out}/{n}"], name=f"{out}/{n}",
                                      value=helper.make_tensor(f"{out}/{n}", onnx.TensorProto.INT64, [1], [v]))
    return [c("last", -1), c("two", 2), c("zero", 0),
            helper.make_node("Shape", [t], [f"{out}/shape"], name=f"{out}/Shape", start=-1),
            helper.make_node("Div", [f"{out}/shape", f"{out}/two"], [f"{out}/end"], name=f"{out}/Div"),
            helper.make_node("Slice", [t, f"{out}/zero", f"{out}/end", f"{out}/last"], [out], name=f"{out}/Slice")]


def _match_all(model: onnx.ModelProto) -> list[dict]:
    ix = ProtoIndex(model.graph)
    return [m for n in model.graph.node if n.op_type == "Add" for m in [match(n, ix)] if m]


def _has_rotary(model: onnx.ModelProto) -> bool:
    return any(n.op_type == "Neg" for n in model.graph.node)


__all__ = ["ROTARY_OPSET", "fuse_rotary", "match"]
