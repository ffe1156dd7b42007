"""Matching helpers over an ONNX GraphProto for fusions that must not load the weights (a decoder's
weights may be gigabytes of external data; the patterns only need small constants)."""
from __future__ import annotations

from collections import defaultdict

import numpy as np
import onnx
from hewn.core.ir import default_opset
from hewn.core.ir import upgrade_opset as upgrade_model
from onnx import helper, numpy_helper


class ProtoIndex:
    """Producers, readers and small constants of a GraphProto (external weights are never read)."""

    def __init__(self, graph: onnx.GraphProto):
        self.producer = {o: n for n in graph.node for o in n.output}
        self.readers: dict[str, list] = defaultdict(list)
        for n in graph.node:
            for i in n.input:
                self.readers[i].append(n)
        self.inits = {i.name: i for i in graph.initializer}

    def made_by(self, name: str, op: str):
        node = self.producer.get(name)
        return node if node is not None and node.op_type == op else None

    def const(self, name: str) -> np.ndarray | None:
        node = self.producer.get(name)
        if node is not None and node.op_type == "Constant":
            for a in node.attribute:
                if a.name == "value":
                    return numpy_helper.to_array(a.t)
            return None
        init = self.inits.get(name)
        if init is not None and not init.external_data:
            return numpy_helper.to_array(init)
        return None

    def scalar(self, name: str) -> float | None:
        v = self.const(name)
        return float(v.reshape(-1)[0]) if v is not None and v.size == 1 else None

    def unscale(self, name: str) -> tuple[str, float]:
        """name = y * c or y / c with a scalar constant c: (y, c), else (name, 1)."""
        for op in ("Mul", "Div"):
            node = self.made_by(name, op)
            if node is None:
                continue
            for i in ((1, 0) if op == "Mul" else (1,)):
                c = self.scalar(node.input[i])
                if c is not None and c != 0:
                    return node.input[1 - i], (c if op == "Mul" else 1.0 / c)
        return name, 1.0

    def unrepeat(self, name: str) -> tuple[str, bool]:
        """repeat_kv's Reshape(Expand(Unsqueeze(x, [2]))): (x, True); anything else: (name, False)."""
        rs = self.made_by(name, "Reshape")
        ex = self.made_by(rs.input[0], "Expand") if rs is not None else None
        un = self.made_by(ex.input[0], "Unsqueeze") if ex is not None else None
        if un is None:
            return name, False
        axes = self.const(un.input[1]) if len(un.input) > 1 else next(
            (np.array(a.ints) for a in un.attribute if a.name == "axes"), None)
        if axes is None or axes.reshape(-1).tolist() != [2]:
            return name, False
        return un.input[0], True


def attr(node, name: str, default):
    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


def upgrade_for(model: onnx.ModelProto, opset: int, report: dict, found: list, rematch) -> tuple[onnx.ModelProto, list]:
    """(`model` at `opset` or newer, its matches). The converter (core.ir's, which names what it
    could not convert) builds a new graph, so the matches are made again on it with rematch(model);
    the upgrade is noted in `report`."""
    current = default_opset(model)
    if current >= opset:
        return model, found
    report["opset"] = [current, opset]
    model = upgrade_model(model, opset, "decoder fusion")
    model.ir_version = max(model.ir_version, 10)   # opset 20+ needs IR 10
    return model, rematch(model)


def replace_producers(model: onnx.ModelProto, found: list[dict], op_type: str, make) -> None:
    """Each `op_type` node whose first output is a match's "output" is replaced by make(node, match)
    (a list of nodes, in place); the graph's order is kept."""
    by_output = {m["output"]: m for m in found}
    nodes = []
    for node in model.graph.node:
        m = by_output.get(node.output[0]) if node.op_type == op_type and node.output else None
        nodes.extend([node] if m is None else make(node, m))
    del model.graph.node[:]
    model.graph.node.extend(nodes)


def drop_dead(graph: onnx.GraphProto) -> None:
    """Remove nodes whose outputs nothing reads (the Softmax chains and repeat_kv's shape arithmetic)."""
    live = {o.name for o in graph.output}
    keep = []
    for node in reversed(graph.node):
        if any(o in live for o in node.output):
            keep.append(node)
            live.update(i for i in node.input if i)
    if len(keep) == len(graph.node):
        return
    del graph.node[:]
    graph.node.extend(reversed(keep))
    used = {i for n in graph.node for i in n.input} | {o.name for o in graph.output}
    inits = [i for i in graph.initializer if i.name in used]
    if len(inits) != len(graph.initializer):
        del graph.initializer[:]
        graph.initializer.extend(inits)
