"""FuseGeluTanh: the tanh approximation of GELU written out in elementwise ops (transformers'
gelu_pytorch_tanh / NewGELU, Gemma's MLP) becomes one ONNX `Gelu(approximate="tanh")` (opset 20).

Matched per Tanh:
    inner = c1 * (x + c2 * x^3)          c1 = sqrt(2/pi), c2 = 0.044715; x^3 as x*x*x or Pow(x, 3)
    y = 0.5 * x * (1 + Tanh(inner))      in any order of the three products
Nine nodes a call; ORT's CPU graph optimizer leaves this form alone. Graph only (an older graph is
upgraded to opset 20 when something matches), verified by the caller like the other decoder fusions.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import onnx_graphsurgeon as gs
from hewn.core.pass_infra import Pass, PassResult
from hewn.passes.fusion.match import matches_at, producer, scalar, sole_reader

GELU_OPSET = 20
C1, C2 = math.sqrt(2 / math.pi), 0.044715


def _near(v, want) -> bool:
    return v is not None and abs(v - want) <= 1e-4 * abs(want)


def _scaled(t: gs.Tensor | None, want: float) -> gs.Tensor | None:
    """t = Mul(c, y) with c ~ want: y."""
    node = producer(t, "Mul")
    if node is None:
        return None
    for i in (0, 1):
        if _near(scalar(node.inputs[i]), want):
            return node.inputs[1 - i]
    return None


def _is_cube_of(t: gs.Tensor, x: gs.Tensor) -> bool:
    pw = producer(t, "Pow")
    if pw is not None:
        return pw.inputs[0] is x and scalar(pw.inputs[1]) == 3.0
    mul = producer(t, "Mul")
    if mul is None:
        return False
    for a, b in ((0, 1), (1, 0)):
        sq = producer(mul.inputs[b], "Mul")
        if mul.inputs[a] is x and sq is not None and len(sq.inputs) == 2 and all(i is x for i in sq.inputs):
            return True
    return False


def _other(node: gs.Node, t: gs.Tensor) -> gs.Tensor:
    return node.inputs[1] if node.inputs[0] is t else node.inputs[0]


def match(tanh: gs.Node) -> dict | None:
    """{"x", "output", "tanh"} of one tanh GELU, or None."""
    add = producer(_scaled(tanh.inputs[0], C1), "Add")
    if add is None:
        return None
    x = None
    for i in (0, 1):
        cube = _scaled(add.inputs[1 - i], C2)
        if cube is not None and _is_cube_of(cube, add.inputs[i]):
            x = add.inputs[i]
    if x is None:
        return None
    t = tanh.outputs[0]
    one = sole_reader(t, "Add")
    if one is None or scalar(_other(one, t)) != 1.0:
        return None
    first = sole_reader(one.outputs[0], "Mul")      # (1 + t) * x or (1 + t) * (0.5 x), then * 0.5 or nothing
    if first is None:
        return None
    partner = _other(first, one.outputs[0])
    if partner is x:
        last = sole_reader(first.outputs[0], "Mul")
        if last is None or scalar(_other(last, first.outputs[0])) != 0.5:
            return None
        return {"x": x, "output": last.outputs[0], "tanh": tanh}
    if _scaled(partner, 0.5) is x:
        return {"x": x, "output": first.outputs[0], "tanh": tanh}
    return None


class FuseGeluTanh(Pass):
    name = "fuse_gelu_tanh"
    # min_opset stays the default: the pass upgrades the graph to GELU_OPSET itself, and only when
    # something matches (a min_opset here would make compile() upgrade every model)

    @dataclass(frozen=True)
    class Config:
        pass

    def run(self, graph: gs.Graph, ctx) -> PassResult:
        """Stats: fused count, opset (when upgraded)."""
        found = _match_all(graph)
        stats = {"fused": len(found)}
        if not found:
            return PassResult(False, stats)
        found = matches_at(graph, GELU_OPSET, ctx, stats, found, _match_all)
        if found is None:   # the converter refused: nothing fused, the reason in stats
            return PassResult(False, stats)
        for m in found:
            m["output"].inputs.clear()
            graph.nodes.append(gs.Node("Gelu", ctx.names.make(self.name, m["tanh"].name, "Gelu"),
                                       attrs={"approximate": "tanh"}, inputs=[m["x"]], outputs=[m["output"]]))
        graph.cleanup().toposort()
        return PassResult(True, stats)


def _match_all(graph: gs.Graph) -> list[dict]:
    return [m for n in graph.nodes if n.op == "Tanh" for m in [match(n)] if m]


__all__ = ["GELU_OPSET", "FuseGeluTanh", "match"]
