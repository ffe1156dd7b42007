"""FuseRotary: rotary position embedding written out as transformers' apply_rotary_pos_emb
(x * cos + rotate_half(x) * sin) becomes one ONNX `RotaryEmbedding` node (opset 23).

Matched per Add:
    cos4, sin4 = Unsqueeze(cos, [1]), Unsqueeze(sin, [1])          (cos, sin: [B, S, D], halves equal)
    rot = Concat(Neg(Slice(x, D/2 .. end)), Slice(x, 0 .. D/2), axis -1)
    y = Add(Mul(x, cos4), Mul(rot, sin4))
becomes  y = RotaryEmbedding(x, cos[..., :D/2], sin[..., :D/2]): the halves are cut once per cos/sin
pair and shared by every layer. Gemma-3 has two pairs (local and global theta). Per layer this
removes the ~28 nodes of q's and k's rotation (half of them shape arithmetic for D/2).

Graph only, like FuseCachedAttention (an older graph is upgraded to opset 23 when something
matches); the caller verifies the result numerically (the halves of cos being equal is how
transformers builds them, not something the graph states).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx_graphsurgeon as gs
from hewn.core.pass_infra import Pass, PassResult
from hewn.passes.fusion.match import const, matches_at, producer

ROTARY_OPSET = 23


def _unsqueezed(t: gs.Tensor) -> gs.Tensor | None:
    un = producer(t, "Unsqueeze")
    if un is None or len(un.inputs) < 2:
        return None
    axes = const(un.inputs[1])
    return un.inputs[0] if axes is not None and axes.reshape(-1).tolist() == [1] else None


def _optional(node: gs.Node, i: int) -> np.ndarray | None:
    return const(node.inputs[i]) if len(node.inputs) > i and node.inputs[i].name else None


def _last_axis(node: gs.Node) -> bool:
    axes, steps = _optional(node, 3), _optional(node, 4)
    return (axes is not None and axes.reshape(-1).tolist() in ([3], [-1])
            and (steps is None or steps.reshape(-1).tolist() == [1]))


def _rotated_half(t: gs.Tensor) -> gs.Tensor | None:
    """Concat(Neg(Slice(x, h..)), Slice(x, ..h)) over the last axis: x."""
    cat = producer(t, "Concat")
    if cat is None or len(cat.inputs) != 2 or int(cat.attrs.get("axis", 0)) not in (-1, 3):
        return None
    neg = producer(cat.inputs[0], "Neg")
    hi = producer(neg.inputs[0], "Slice") if neg is not None else None
    lo = producer(cat.inputs[1], "Slice")
    if hi is None or lo is None or hi.inputs[0] is not lo.inputs[0] or not (_last_axis(hi) and _last_axis(lo)):
        return None
    start = const(lo.inputs[1])
    if start is None or start.reshape(-1).tolist() != [0]:
        return None
    return lo.inputs[0]


def match(add: gs.Node) -> dict | None:
    """{"add", "x", "cos", "sin", "output"} of one rotation, or None."""
    muls = [producer(i, "Mul") for i in add.inputs]
    if len(add.inputs) != 2 or any(m is None for m in muls):
        return None
    for straight, turned in (muls, muls[::-1]):
        for xi in (0, 1):
            x, cos = straight.inputs[xi], _unsqueezed(straight.inputs[1 - xi])
            if cos is None:
                continue
            for ri in (0, 1):
                if _rotated_half(turned.inputs[ri]) is x:
                    sin = _unsqueezed(turned.inputs[1 - ri])
                    if sin is not None:
                        return {"add": add, "x": x, "cos": cos, "sin": sin, "output": add.outputs[0]}
    return None


class FuseRotary(Pass):
    name = "fuse_rotary"
    # min_opset stays the default: the pass upgrades the graph to ROTARY_OPSET itself, and only when
    # something matches (a min_opset here would make compile() upgrade every model)

    @dataclass(frozen=True)
    class Config:
        pass

    def run(self, graph: gs.Graph, ctx) -> PassResult:
        """Stats: fused count, opset (when upgraded), tables (cos/sin pairs cut in half)."""
        found = _match_all(graph)
        stats = {"fused": len(found)}
        if not found:
            return PassResult(False, stats)
        found = matches_at(graph, ROTARY_OPSET, ctx, stats, found, _match_all)
        if found is None:   # the converter refused: nothing fused, the reason in stats
            return PassResult(False, stats)
        halves: dict[str, gs.Tensor] = {}
        for m in found:
            for t in (m["cos"], m["sin"]):
                if t.name not in halves:   # t[..., :D/2], cut once and shared
                    halves[t.name] = self._half(graph, t, ctx)
            m["output"].inputs.clear()
            graph.nodes.append(gs.Node("RotaryEmbedding", ctx.names.make(self.name, m["add"].name, "RotaryEmbedding"),
                                       inputs=[m["x"], halves[m["cos"].name], halves[m["sin"].name]],
                                       outputs=[m["output"]]))
        stats["tables"] = len(halves) // 2
        graph.cleanup().toposort()
        return PassResult(True, stats)

    def _half(self, graph: gs.Graph, t: gs.Tensor, ctx) -> gs.Tensor:
        """t[..., :D/2] with D read from t's shape at run time."""
        base = ctx.names.make(self.name, t.name, "half")
        tensor = lambda role, dtype=np.int64: gs.Variable(f"{base}/{role}", dtype=dtype)
        nodes, values = [], {}
        for role, v in (("last", -1), ("two", 2), ("zero", 0)):
            values[role] = tensor(role)
            nodes.append(gs.Node("Constant", f"{base}/{role}", outputs=[values[role]],
                                 attrs={"value": gs.Constant(f"{base}/{role}", np.array([v], np.int64))}))
        shape, end, out = tensor("shape"), tensor("end"), tensor("out", t.dtype)
        nodes += [gs.Node("Shape", f"{base}/Shape", attrs={"start": -1}, inputs=[t], outputs=[shape]),
                  gs.Node("Div", f"{base}/Div", inputs=[shape, values["two"]], outputs=[end]),
                  gs.Node("Slice", f"{base}/Slice", inputs=[t, values["zero"], end, values["last"]], outputs=[out])]
        graph.nodes.extend(nodes)
        return out


def _match_all(graph: gs.Graph) -> list[dict]:
    if not any(n.op == "Neg" for n in graph.nodes):   # no rotate_half: nothing to look at
        return []
    return [m for n in graph.nodes if n.op == "Add" for m in [match(n)] if m]


__all__ = ["ROTARY_OPSET", "FuseRotary", "match"]
