"""FuseGeluTanh: the tanh approximation of GELU written out in elementwise ops (transformers'
gelu_pytorch_tanh / NewGELU, Gemma's MLP) becomes one ONNX `Gelu(approximate="tanh")` (opset 20).

Matched per Tanh:
    inner = c1 * (x + c2 * x^3)          c1 = sqrt(2/pi), c2 = 0.044715; x^3 as x*x*x or Pow(x, 3)
    y = 0.5 * x * (1 + Tanh(inner))      in any order of the three products
Nine nodes a call; ORT's CPU graph optimizer leaves this form alone. Graph only, verified by the
caller like the other decoder fusions.
"""
from __future__ import annotations

import math

import onnx
from hewn.passes.fusion.proto_index import (
    ProtoIndex,
    drop_dead,
    replace_producers,
    upgrade_for,
)
from onnx import helper

GELU_OPSET = 20
C1, C2 = math.sqrt(2 / math.pi), 0.044715


def _near(v, want) -> bool:
    return v is not None and abs(v - want) <= 1e-4 * abs(want)


def _scaled(ix: ProtoIndex, name: str, want: float):
    """name = Mul(c, y) with c ~ want: y."""
    node = ix.made_by(name, "Mul")
    if node is None:
        return None
    for i in (0, 1):
        if _near(ix.scalar(node.input[i]), want):
            return node.input[1 - i]
    return None


def _is_cube_of(ix: ProtoIndex, name: str, x: str) -> bool:
    pw = ix.made_by(name, "Pow")
    if pw is not None:
        return pw.input[0] == x and ix.scalar(pw.input[1]) == 3.0
    mul = ix.made_by(name, "Mul")
    if mul is None:
        return False
    for a, b in ((0, 1), (1, 0)):
        sq = ix.made_by(mul.input[b], "Mul")
        if mul.input[a] == x and sq is not None and list(sq.input) == [x, x]:
            return True
    return False


def _reader(ix: ProtoIndex, name: str, op: str):
    readers = ix.readers[name]
    return readers[0] if len(readers) == 1 and readers[0].op_type == op else None


def _other(node, name: str) -> str:
    return node.input[1] if node.input[0] == name else node.input[0]


def match(tanh, ix: ProtoIndex) -> dict | None:
    add = ix.made_by(_scaled(ix, tanh.input[0], C1) or "", "Add")
    if add is None:
        return None
    x = None
    for i in (0, 1):
        cube = _scaled(ix, add.input[1 - i], C2)
        if cube is not None and _is_cube_of(ix, cube, add.input[i]):
            x = add.input[i]
    if x is None:
        return None
    one = _reader(ix, tanh.output[0], "Add")
    if one is None or ix.scalar(_other(one, tanh.output[0])) != 1.0:
        return None
    first = _reader(ix, one.output[0], "Mul")      # (1 + t) * x or (1 + t) * (0.5 x), then * 0.5 or nothing
    if first is None:
        return None
    partner = _other(first, one.output[0])
    if partner == x:
        last = _reader(ix, first.output[0], "Mul")
        if last is None or ix.scalar(_other(last, first.output[0])) != 0.5:
            return None
        return {"x": x, "output": last.output[0], "tanh": tanh}
    if _scaled(ix, partner, 0.5) == x:
        return {"x": x, "output": first.output[0], "tanh": tanh}
    return None


def fuse_gelu_tanh(model: onnx.ModelProto) -> tuple[onnx.ModelProto, dict]:
    found = _match_all(model)
    report = {"fused": len(found)}
    if not found:
        return model, report
    model, found = upgrade_for(model, GELU_OPSET, report, found, _match_all)
    replace_producers(model, found, "Mul", lambda node, m: [
        helper.make_node("Gelu", [m["x"]], [m["output"]], name=f"{m['tanh'].name}/Gelu", approximate="tanh")])
    drop_dead(model.graph)
    return model, report


def _match_all(model: onnx.ModelProto) -> list[dict]:
    ix = ProtoIndex(model.graph)
    return [m for n in model.graph.node if n.op_type == "Tanh" for m in [match(n, ix)] if m]


__all__ = ["GELU_OPSET", "fuse_gelu_tanh", "match"]
