"""RemoveIdentity: drop Identity nodes and inference-mode Dropout (both copy their input)."""
from __future__ import annotations

import onnx_graphsurgeon as gs

from hewn.core.pass_infra import Pass, PassResult

from hewn.core.graph_utils import bypass, const_value, is_graph_output


def _dropout_is_identity(graph: gs.Graph, node: gs.Node) -> bool:
    if len(node.outputs) > 1 and (node.outputs[1].outputs or is_graph_output(graph, node.outputs[1])):
        return False  # the mask output is read by someone
    if len(node.inputs) >= 3 and node.inputs[2].name:  # opset 12+: training_mode input
        mode = const_value(node.inputs[2])
        return mode is not None and not bool(mode)
    return True  # opset < 12 Dropout is identity at inference; opset 12+ without training_mode too


class RemoveIdentity(Pass):
    name = "remove_identity"

    def run(self, graph: gs.Graph, ctx) -> PassResult:
        removed, kept = {"Identity": 0, "Dropout": 0}, []
        for node in list(graph.nodes):
            if node.op not in removed or not node.inputs or not node.outputs:
                continue
            if node.op == "Dropout" and not _dropout_is_identity(graph, node):
                kept.append(node.name)
                continue
            if bypass(graph, node, keep=node.inputs[0], drop=node.outputs[0]):
                removed[node.op] += 1
            else:
                kept.append(node.name)
        if any(removed.values()):
            graph.cleanup()
        stats = {f"{op.lower()}_removed": n for op, n in removed.items() if n}
        if kept:
            stats["kept"] = kept
        return PassResult(modified=sum(removed.values()) > 0, stats=stats)
