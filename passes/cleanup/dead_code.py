"""EliminateDeadNodes: remove nodes whose outputs reach no graph output."""
from __future__ import annotations

import onnx_graphsurgeon as gs

from hewn.core.pass_infra import Pass, PassResult
from hewn.passes.analysis.shape_inference import ShapeInfo


class EliminateDeadNodes(Pass):
    name = "eliminate_dead_nodes"
    preserves = (ShapeInfo,)  # removing nodes changes no remaining tensor's shape or dtype

    def run(self, graph: gs.Graph, ctx) -> PassResult:
        before = len(graph.nodes)
        # Graph inputs are the model's interface: kept even when unused.
        graph.cleanup(remove_unused_node_outputs=False, remove_unused_graph_inputs=False)
        removed = before - len(graph.nodes)
        return PassResult(modified=removed > 0, stats={"nodes_removed": removed} if removed else {})
