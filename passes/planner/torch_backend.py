"""The torch backend of the planner: an fx GraphModule run in torch (the one distillation
fine-tunes); the same questions as the ONNX backend in backends.py. Imports torch."""
from __future__ import annotations

from typing import Sequence

import numpy as np

from hewn.core.torch_run import run_torch, torch_feeds
from hewn.passes.lowrank.factor import SVDConfig
from hewn.passes.lowrank.fx_svd import torch_factorizable
from hewn.passes.planner.sensitivity import FactorItem, conv_item
from hewn.passes.prune.fx_channels import analyze_module


class TorchBackend:
    """`feeds`: a list of input tuples (numpy or torch); samples are run as one batch when the
    graph allows it, else one by one."""

    def __init__(self, gm, example_inputs: tuple, feeds: Sequence[tuple]):
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
