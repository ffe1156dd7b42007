"""CheckOpSupport: name every node whose op the target's runtime does not accelerate.

A target profile may carry an op allow-list (mobile: the operators of ORT's mobile package and
the XNNPACK/NNAPI/CoreML EPs). Nodes outside it are not changed — they still run, on the CPU
EP fallback or not at all in a reduced-operator build — but each one is reported by name.
"""
from __future__ import annotations

from dataclasses import dataclass

import onnx_graphsurgeon as gs

from hewn.core.pass_infra import Pass, PassResult


class CheckOpSupport(Pass):
    name = "check_op_support"

    @dataclass(frozen=True)
    class Config:
        pass

    def run(self, graph: gs.Graph, ctx) -> PassResult:
        allowed = ctx.target.allowed_ops
        if not allowed:
            return PassResult(False, {"allow_list": None})
        outside: dict[str, list[str]] = {}
        for node in graph.nodes:
            key = node.op if node.domain in ("", "ai.onnx", None) else f"{node.domain}:{node.op}"
            if key not in allowed:
                # unnamed nodes are named by the tensor they write, which users can find in a viewer
                outside.setdefault(key, []).append(node.name or f"{node.op} -> '{node.outputs[0].name}'")
        for op, nodes in sorted(outside.items()):
            for name in nodes:
                ctx.note(self.name, name, f"{op} is not in the op allow-list of target '{ctx.target.name}': it runs on "
                                          f"the CPU EP fallback, or fails in a reduced-operator build")
        return PassResult(False, {"unsupported_ops": {op: len(n) for op, n in sorted(outside.items())},
                                  "unsupported_nodes": sum(len(n) for n in outside.values()),
                                  "nodes": len(graph.nodes)})
