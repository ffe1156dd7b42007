"""The two IRs the planner measures and edits: an ONNX graph run in ORT, or an fx GraphModule
run in torch (the one distillation fine-tunes). Both answer the same questions for
sensitivity.py: the channel analysis, the factorizable weights with their MACs, and the model
outputs with a few weights overridden."""
from __future__ import annotations

from typing import Sequence

import numpy as np
import onnx
import onnx_graphsurgeon as gs
from onnx import numpy_helper

from compiler.ir import to_model
from compiler.runtime import make_session, run_all

from .graph_utils import const_value
from .low_rank import SVDConfig
from .sensitivity import FactorItem, conv_item


class OnnxBackend:
    def __init__(self, graph: gs.Graph, ctx, feeds: Sequence[dict]):
        from .onnx_channels import analyze_graph

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
            from .svd_split import factorizable

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


class TorchBackend:
    """`feeds`: a list of input tuples (numpy or torch); samples are run as one batch when the
    graph allows it, else one by one."""

    def __init__(self, gm, example_inputs: tuple, feeds: Sequence[tuple]):
        from .fx_channels import analyze_module

        self.gm, self.example_inputs = gm, example_inputs
        self.feeds = torch_feeds(feeds)
        self.analysis = analyze_module(gm, example_inputs)
        self._state = {k: v.detach() for k, v in list(gm.named_parameters()) + list(gm.named_buffers())}
        self._factorizable = None

    def param_key(self, param: str) -> str:
        return self.analysis.view.param_paths.get(param, param)

    def const(self, key: str) -> np.ndarray:
        return self._state[key].numpy()

    def prunable(self, family) -> bool:
        return True

    def factorizable(self, min_params: int) -> list[FactorItem]:
        if self._factorizable is None:
            from .fx_svd import torch_factorizable

            found, _ = torch_factorizable(self.gm, SVDConfig(min_params=1))
            numel = _output_numel(self.gm)
            items = []
            for f in found:
                m, n = f.matrix.shape
                out = numel.get(f.node.name if f.node is not None else f.name, 0)
                macs = (out // m) * m * n if m else 0
                w = self._state[f.weight]
                if f.kind == "conv_module":
                    items.append(conv_item(f.name, f.weight, w.numpy(), macs, w.numpy().dtype))
                else:
                    items.append(FactorItem(f.name, f.weight, f.matrix, macs,
                                            lambda mat, d=w.numpy().dtype: mat.astype(d)))
            self._factorizable = [i for i in items if i.macs > 0]
        return [i for i in self._factorizable if i.matrix.size >= min_params]

    def outputs(self, overrides: dict, feeds=None) -> list:
        return run_torch(self.gm, self.feeds if feeds is None else feeds, overrides)


def torch_feeds(feeds) -> list[tuple]:
    import torch

    return [tuple(torch.as_tensor(np.asarray(x)) for x in f) for f in feeds]


def run_torch(module, feeds: Sequence[tuple], overrides: dict | None = None) -> list:
    """Per-sample outputs (lists of numpy arrays) of `module` with some weights overridden; the
    samples run as one batch when the graph allows it, else one by one."""
    import torch
    from torch.func import functional_call

    from compiler.frontend_torch import _flatten

    params = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in (overrides or {}).items()}
    with torch.no_grad():
        try:
            batched = tuple(torch.cat([f[i] for f in feeds]) for i in range(len(feeds[0])))
            result = [t.numpy() for t in _flatten(functional_call(module, params, batched))]
            starts = np.cumsum([0] + [len(f[0]) for f in feeds])
            return [[r[s:e] for r in result] for s, e in zip(starts[:-1], starts[1:])]
        except Exception:
            return [[t.numpy() for t in _flatten(functional_call(module, params, f))] for f in feeds]


def _output_numel(gm) -> dict:
    """fx node name and call_module target -> output elements (from ShapeProp's tensor_meta)."""
    out = {}
    for node in gm.graph.nodes:
        meta = node.meta.get("tensor_meta")
        if meta is None or not hasattr(meta, "shape"):
            continue
        n = int(np.prod(tuple(meta.shape)))
        out[node.name] = n
        if node.op == "call_module":
            out[node.target] = n
    return out
