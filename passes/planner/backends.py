"""The ONNX backend of the planner: an ONNX graph run in ORT. It answers the same questions for
sensitivity.py as the torch backend (torch_backend.py, an fx GraphModule run in torch): the
channel analysis, the factorizable weights with their MACs, and the model outputs with a few
weights overridden."""
from __future__ import annotations

from typing import Sequence

import numpy as np
import onnx
import onnx_graphsurgeon as gs
from onnx import numpy_helper

from hewn.core.ir import to_model
from hewn.core.runtime import make_session, run_all

from hewn.core.graph_utils import const_value
from hewn.passes.lowrank.factor import SVDConfig
from hewn.passes.planner.sensitivity import FactorItem, conv_item


class OnnxBackend:
    def __init__(self, graph: gs.Graph, ctx, feeds: Sequence[dict]):
        from hewn.passes.prune.onnx_channels import analyze_graph

        self.graph, self.ctx, self.feeds = graph, ctx, list(feeds)
        self.analysis = analyze_graph(graph, ctx)
        self._model = to_model(graph, ir_version=ctx.ir_version)
        self._consts = {t.name: t for t in graph.tensors().values() if isinstance(t, gs.Constant)}
        self._factorizable = None

    def param_key(self, param: str) -> str:
        return param

    def const(self, key: str) -> np.ndarray:
        return np.asarray(self._consts[key].values)

    def prunable(self, family) -> bool:
        return True

    def factorizable(self, min_params: int) -> list[FactorItem]:
        if self._factorizable is None:
            from hewn.passes.lowrank.svd_split import factorizable

            found, _ = factorizable(self.graph, self.ctx, SVDConfig(min_params=1))
            items = []
            for f in found:
                node, w = f.node, const_value(f.node.inputs[1])
                param = node.inputs[1].name
                if node.op == "Conv":
                    items.append(conv_item(node.name, param, w, f.macs, w.dtype))
                elif node.op == "Gemm" and node.attrs.get("transB", 0):
                    items.append(FactorItem(node.name, param, f.matrix.astype(np.float64), f.macs,
                                            lambda m, d=w.dtype: m.astype(d)))
                else:
                    items.append(FactorItem(node.name, param, f.matrix.astype(np.float64), f.macs,
                                            lambda m, d=w.dtype: np.ascontiguousarray(m.T).astype(d)))
            self._factorizable = items
        return [i for i in self._factorizable if i.matrix.size >= min_params]

    def outputs(self, overrides: dict, feeds=None) -> list:
        model = onnx.ModelProto()
        model.CopyFrom(self._model)
        for init in model.graph.initializer:
            if init.name in overrides:
                init.CopyFrom(numpy_helper.from_array(overrides[init.name], init.name))
        return run_all(make_session(model), feeds if feeds is not None else self.feeds)
