"""Matching helpers over onnx-graphsurgeon graphs, shared by every fusion pass (FuseAttention,
FuseCachedAttention, FuseRotary, FuseGeluTanh).

Patterns only need small constants (axes, scales, indices); `const` and `scalar` never read a
weight that is still on disk (a decoder's weights may be gigabytes of external data kept as
memmaps), and `scalar` checks the size before it reads anything. `score_chain` is the one matcher
of scaled dot-product attention, Q·Kᵀ -> scale -> mask -> Softmax [-> IsNaN guard] -> ·V; each
attention fusion checks its own Q, K and V producers on top of it.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx_graphsurgeon as gs
from hewn.core import external
from hewn.core.graph_utils import const_value
from hewn.core.ir import to_graph, to_model
from hewn.core.ir import upgrade_opset as upgrade_model


def producer(t: gs.Tensor | None, op: str) -> gs.Node | None:
    """The node writing `t` when it is an `op` node, else None."""
    if t is None or not t.inputs:
        return None
    node = t.inputs[0]
    return node if node.op == op else None


def sole_reader(t: gs.Tensor, op: str) -> gs.Node | None:
    """The one node reading `t` when it is an `op` node, else None."""
    return t.outputs[0] if len(t.outputs) == 1 and t.outputs[0].op == op else None


def const(t: gs.Tensor | None) -> np.ndarray | None:
    """The value of a small constant (a Constant tensor or a `Constant` node's output); None for a
    computed tensor or a weight still on disk (never read here)."""
    if t is None or external.on_disk(t):
        return None
    return const_value(t)


def scalar(t: gs.Tensor | None) -> float | None:
    """A one-element constant as a float; anything larger is not read."""
    if isinstance(t, gs.Constant) and int(np.prod(t.shape, dtype=np.int64)) != 1:
        return None
    v = const(t)
    return float(v.reshape(-1)[0]) if v is not None and v.size == 1 else None


def unscale(t: gs.Tensor) -> tuple[gs.Tensor, float]:
    """t = y * c or y / c with a scalar constant c: (y, c), else (t, 1)."""
    for op in ("Mul", "Div"):
        node = producer(t, op)
        if node is None:
            continue
        for i in (1, 0) if op == "Mul" else (1,):
            c = scalar(node.inputs[i])
            if c is not None and c != 0:
                return node.inputs[1 - i], (c if op == "Mul" else 1.0 / c)
    return t, 1.0


def unrepeat(t: gs.Tensor) -> tuple[gs.Tensor, bool]:
    """repeat_kv's Reshape(Expand(Unsqueeze(x, [2]))): (x, True); anything else: (t, False)."""
    rs = producer(t, "Reshape")
    ex = producer(rs.inputs[0], "Expand") if rs is not None else None
    un = producer(ex.inputs[0], "Unsqueeze") if ex is not None else None
    if un is None:
        return t, False
    axes = const(un.inputs[1]) if len(un.inputs) > 1 else (
        np.array(un.attrs["axes"]) if "axes" in un.attrs else None)
    if axes is None or axes.reshape(-1).tolist() != [2]:
        return t, False
    return un.inputs[0], True


@dataclass
class Scores:
    """Softmax(Q·Kᵀ * scale [+ mask]) · V, as found around one Softmax."""
    softmax: gs.Node
    q: gs.Tensor          # the score MatMul's operands, their scalar factors peeled off
    k: gs.Tensor          # (Kᵀ: still transposed, however the exporter wrote it)
    mask: gs.Tensor | None   # the additive operand of the scores, if any
    scale: float          # every scalar factor of the scores, Q's and K's included
    pv: gs.Node           # MatMul(probs, V)


def score_chain(softmax: gs.Node) -> tuple[Scores | None, str]:
    """The attention chain around `softmax`, or None and why not."""
    if int(softmax.attrs.get("axis", -1)) not in (-1, 3):
        return None, "Softmax is not over the last axis"
    scores, mask = softmax.inputs[0], None
    add = producer(scores, "Add")
    if add is not None:   # the mask may be either operand
        first = producer(unscale(add.inputs[0])[0], "MatMul") is not None
        scores, mask = (add.inputs[0], add.inputs[1]) if first else (add.inputs[1], add.inputs[0])
    scores, c = unscale(scores)
    qk = producer(scores, "MatMul")
    if qk is None:
        return None, "no Q·Kᵀ MatMul before the Softmax (a soft-capped or otherwise transformed score is not fused)"
    q, cq = unscale(qk.inputs[0])
    k, ck = unscale(qk.inputs[1])
    probs = softmax.outputs[0]
    readers = probs.outputs
    guard = [n for n in readers if n.op == "IsNaN"]
    if guard:
        where = [n for n in readers if n.op == "Where"]
        if len(guard) != 1 or len(where) != 1 or len(readers) != 2 or where[0].inputs[0] is not guard[0].outputs[0] \
                or where[0].inputs[2] is not probs or scalar(where[0].inputs[1]) != 0.0:
            return None, "the Softmax output has readers other than its IsNaN guard Where(IsNaN(p), 0, p)"
        probs = where[0].outputs[0]
    readers = probs.outputs
    if len(readers) != 1 or readers[0].op != "MatMul" or readers[0].inputs[0] is not probs:
        return None, "the Softmax output is not multiplied by V alone"
    return Scores(softmax, q, k, mask, c * cq * ck, readers[0]), ""


class UpgradeRefused(Exception):
    """onnx's version converter could not bring the graph to the opset a fusion emits."""


def upgrade(graph: gs.Graph, opset: int, ctx, stats: dict) -> bool:
    """Bring `graph` (in place) to `opset` with onnx's version converter (core.ir's, which names
    what it could not convert) when it is older; noted in `stats`. Weights on disk stay there
    (the converter sees their references only). Returns whether it converted: the converter
    builds a new graph, so matches made before must be made again."""
    current = graph.opset
    if current >= opset:
        return False
    try:
        model = upgrade_model(to_model(graph, ir_version=ctx.ir_version), opset, "decoder fusion")
    except Exception as exc:  # noqa: BLE001 - the fusing pass leaves the graph as it was and says why
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UpgradeRefused(f"could not be built: the upgrade to opset {opset} failed: {first}") from None
    converted = to_graph(model)
    graph.__dict__.clear()
    graph.__dict__.update(converted.__dict__)   # in place: the caller holds this Graph object
    ctx.invalidate(graph=graph)
    stats["opset"] = [current, opset]
    return True


def matches_at(graph: gs.Graph, opset: int, ctx, stats: dict, found: list, find) -> list | None:
    """A fusion's matches on `graph` brought to `opset`: `found` itself when no upgrade was needed,
    else `find(graph)` again on the converted graph (stats["fused"] recounted); None when the
    converter refused, with stats saying so (nothing fused, the reason under "dropped")."""
    try:
        if not upgrade(graph, opset, ctx, stats):
            return found
    except UpgradeRefused as exc:
        stats.update(fused=0, dropped=str(exc))
        return None
    found = find(graph)
    stats["fused"] = len(found)
    return found


__all__ = ["Scores", "UpgradeRefused", "matches_at", "const", "producer", "scalar", "score_chain", "sole_reader", "unrepeat", "unscale", "upgrade"]
