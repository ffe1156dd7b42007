"""SVDSplit: split a Gemm / MatMul / Conv with a constant weight into two thinner nodes.

    MatMul(X, W)        -> MatMul(MatMul(X, B^T), A^T)          W^T ~= A B, rank k
    Gemm(X, W, C)       -> Gemm(Gemm(X, B, transB=1), A, C, transB=1)
    Conv k x k (C_out)  -> Conv k x k with k filters, then Conv 1x1 to C_out (bias on the 1x1)

A node is split only when the split is cheaper: k (m + n) <= margin * m n (low_rank.py). At full
rank the split reproduces the node to float tolerance; below it the error is reported per node.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np
import onnx_graphsurgeon as gs

from hewn.core.names import matches
from hewn.core.pass_infra import Pass, PassResult

from hewn.passes.analysis.cost_model import macs_by_node
from hewn.core.graph_utils import const_value
from hewn.passes.lowrank.factor import (SVDConfig, config_ranks_skip, factors, pick_rank, relative_error, svd, worth_it)

MARK = "svd_split/"  # nodes this pass created carry it in their name and are never split again


@dataclass
class Factorizable:
    """One node whose constant weight can be factored: the weight as an (out x in) matrix."""

    node: gs.Node
    matrix: np.ndarray
    macs: int

    @property
    def name(self) -> str:
        return self.node.name

    @property
    def shape(self) -> tuple[int, int]:
        return self.matrix.shape


def weight_matrix(node: gs.Node) -> tuple[Optional[np.ndarray], str]:
    """(the weight as out x in, "") or (None, why not)."""
    if MARK in (node.name or ""):
        return None, "already split"
    if node.op == "MatMul":
        w = const_value(node.inputs[1])
        if w is None or w.ndim != 2:
            return None, "the right operand is not a constant 2-D weight"
        return w.T, ""
    if node.op == "Gemm":
        w = const_value(node.inputs[1])
        if w is None or w.ndim != 2:
            return None, "B is not a constant 2-D weight"
        return (w if node.attrs.get("transB", 0) else w.T), ""
    if node.op == "Conv":
        w = const_value(node.inputs[1])
        if w is None:
            return None, "the weight is not a constant"
        if int(node.attrs.get("group", 1)) != 1:
            return None, "grouped / depthwise conv: its weight has no shared input axis to factor"
        if node.attrs.get("auto_pad", "NOTSET") not in ("NOTSET", b"NOTSET"):
            return None, "auto_pad is set (explicit pads are needed to keep the 1x1 half aligned)"
        return w.reshape(w.shape[0], -1), ""
    return None, f"{node.op} has no weight to factor"


def factorizable(graph: gs.Graph, ctx, config: SVDConfig) -> tuple[list[Factorizable], list[dict]]:
    found, skipped = [], []
    for node, macs in macs_by_node(graph, ctx):
        if node.op not in config.ops or matches(node.name, config.exclude):
            continue
        w, why = weight_matrix(node)
        if w is None:
            if why != "already split":
                skipped.append({"node": node.name, "why": why})
            continue
        if w.size < config.min_params:
            skipped.append({"node": node.name, "why": f"{w.size} weights < min_params={config.min_params}"})
            continue
        if w.dtype.kind != "f":
            skipped.append({"node": node.name, "why": f"weight dtype {w.dtype} is not float"})
            continue
        found.append(Factorizable(node, w, macs))
    return found, skipped


class SVDSplit(Pass):
    name = "svd_split"
    lossless = False  # lossless only at full rank, which is never cheaper
    Config = SVDConfig

    def run(self, graph: gs.Graph, ctx) -> PassResult:
        cfg = self.config
        nodes, skipped = factorizable(graph, ctx, cfg)
        layers = []
        for item in nodes:
            if config_ranks_skip(cfg, item.name):
                continue
            m, n = item.shape
            u, s, vt = svd(item.matrix)
            k = pick_rank(item.name, s, cfg)
            if not worth_it(m, n, k, cfg.margin):
                skipped.append({"node": item.name, "why": f"rank {k} of {m}x{n} is not cheaper "
                                f"(needs k <= {cfg.margin} * {m * n / (m + n):.0f})"})
                continue
            a, b = factors(u, s, vt, k)
            dtype = item.matrix.dtype
            split(graph, item.node, a.astype(dtype), b.astype(dtype), ctx.names, self.name)
            layers.append({"node": item.name, "op": item.node.op, "shape": [m, n], "rank": k, "full_rank": len(s),
                           "energy_kept": round(float((s[:k] ** 2).sum() / max((s ** 2).sum(), 1e-30)), 5),
                           "weight_rel_error": round(relative_error(s, k), 5),
                           "macs_before": item.macs, "macs_after": int(item.macs * k * (m + n) / (m * n))})
        for item in skipped:
            ctx.note(self.name, item["node"], item["why"])
        if not layers:
            return PassResult(False, {"layers": [], "skipped": skipped})
        graph.cleanup().toposort()
        before = sum(r["macs_before"] for r in layers)
        after = sum(r["macs_after"] for r in layers)
        return PassResult(True, {"layers": layers, "skipped": skipped, "macs_before": before, "macs_after": after})


def split(graph: gs.Graph, node: gs.Node, a: np.ndarray, b: np.ndarray, names, pass_name: str) -> None:
    """Replace `node` by two nodes computing with weight A @ B (A: out x k, B: k x in)."""
    k = b.shape[0]
    x, y = node.inputs[0], node.outputs[0]
    mid = gs.Variable(names.make(pass_name, node.name, "lowrank"), dtype=y.dtype)
    first_name = names.make(pass_name, node.name, MARK + "in")
    second_name = names.make(pass_name, node.name, MARK + "out")
    if node.op == "MatMul":
        w1 = gs.Constant(first_name + "/W", np.ascontiguousarray(b.T))
        w2 = gs.Constant(second_name + "/W", np.ascontiguousarray(a.T))
        first = gs.Node("MatMul", first_name, inputs=[x, w1], outputs=[mid])
        second = gs.Node("MatMul", second_name, inputs=[mid, w2], outputs=[y])
    elif node.op == "Gemm":
        attrs = node.attrs
        w1 = gs.Constant(first_name + "/W", np.ascontiguousarray(b))
        w2 = gs.Constant(second_name + "/W", np.ascontiguousarray(a))
        first = gs.Node("Gemm", first_name, attrs={"alpha": float(attrs.get("alpha", 1.0)),
                                                   "transA": int(attrs.get("transA", 0)), "transB": 1},
                        inputs=[x, w1], outputs=[mid])
        second_inputs = [mid, w2] + ([node.inputs[2]] if len(node.inputs) > 2 else [])
        second = gs.Node("Gemm", second_name, attrs={"beta": float(attrs.get("beta", 1.0)), "transB": 1},
                         inputs=second_inputs, outputs=[y])
    else:  # Conv
        w = const_value(node.inputs[1])
        spatial = w.ndim - 2
        w1 = gs.Constant(first_name + "/W", np.ascontiguousarray(b.reshape((k,) + w.shape[1:])))
        w2 = gs.Constant(second_name + "/W", np.ascontiguousarray(a.reshape(a.shape + (1,) * spatial)))
        attrs = {key: v for key, v in node.attrs.items() if key != "group"}
        attrs["kernel_shape"] = list(w.shape[2:])
        first = gs.Node("Conv", first_name, attrs=attrs, inputs=[x, w1], outputs=[mid])
        second_inputs = [mid, w2] + ([node.inputs[2]] if len(node.inputs) > 2 else [])
        second = gs.Node("Conv", second_name, attrs={"kernel_shape": [1] * spatial}, inputs=second_inputs,
                         outputs=[y])
    node.inputs.clear()
    node.outputs.clear()
    graph.nodes.extend([first, second])
