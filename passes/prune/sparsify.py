"""Sparsify: magnitude pruning of individual weights (unstructured) or 2:4 semi-structured.

Unstructured sparsity makes the *file* smaller (sparse initializers, compression), never the
dense kernels faster: ORT's CPU kernels multiply the zeros too. 2:4 (two of every four weights
along the reduction axis are zero) is the form NVIDIA's sparse tensor cores run at up to 2x;
TensorRT picks it up from the weights (its `sparsity` builder flag). The report says which.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import numpy as np
import onnx_graphsurgeon as gs

from hewn.core.names import matches
from hewn.core.errors import ConfigError
from hewn.core.pass_infra import Pass, PassResult

from hewn.core.graph_utils import const_value
from hewn.passes.analysis.cost_model import CostModel
from hewn.passes.analysis.shape_inference import ShapeInfo


def magnitude_mask(w: np.ndarray, sparsity: float) -> np.ndarray:
    """True for the weights kept: the largest (1 - sparsity) share by magnitude."""
    drop = int(round(w.size * sparsity))
    if drop <= 0:
        return np.ones(w.shape, bool)
    order = np.argsort(np.abs(w), axis=None, kind="stable")
    keep = np.ones(w.size, bool)
    keep[order[:drop]] = False
    return keep.reshape(w.shape)


def two_four_mask(w: np.ndarray, axis: int) -> np.ndarray:
    """In every group of 4 consecutive weights along `axis` (the reduction axis), keep the 2 largest."""
    moved = np.moveaxis(w, axis, -1)
    groups = np.abs(moved).reshape(-1, 4)
    order = np.argsort(-groups, axis=1, kind="stable")
    keep = np.zeros_like(groups, dtype=bool)
    np.put_along_axis(keep, order[:, :2], True, axis=1)
    return np.moveaxis(keep.reshape(moved.shape), -1, axis)


def reduction_axis(node: gs.Node, w: np.ndarray) -> int:
    """The axis a weighted op sums over: Conv input channels, MatMul rows, Gemm K."""
    if node.op == "Conv":
        return 1
    if node.op == "Gemm":
        return 1 if node.attrs.get("transB", 0) else 0
    return w.ndim - 2


class Sparsify(Pass):
    name = "sparsify"
    lossless = False
    preserves = (ShapeInfo, CostModel)  # weight values change; no shape, node or parameter count does

    @dataclass(frozen=True)
    class Config:
        pattern: str = "unstructured"   # unstructured | 2:4
        sparsity: float = 0.5           # share of weights set to zero (unstructured)
        ops: tuple[str, ...] = ("Conv", "Gemm", "MatMul")
        min_params: int = 4096          # smaller weights are left dense (the first conv, the classifier)
        exclude: tuple[str, ...] = field(default=())

        def __post_init__(self) -> None:  # validated at construction
            if self.pattern not in ("unstructured", "2:4"):
                raise ConfigError(f"sparsify pattern {self.pattern!r}: choose 'unstructured' or '2:4'")
            if not 0 < self.sparsity < 1:
                raise ConfigError(f"sparsify sparsity={self.sparsity}: give a share in (0, 1)")

    def run(self, graph: gs.Graph, ctx) -> PassResult:
        cfg = self.config
        layers, zeros, total = {}, 0, 0
        for node in graph.nodes:
            if node.op not in cfg.ops or len(node.inputs) < 2 or matches(node.name, cfg.exclude):
                continue
            weight = node.inputs[1]
            w = const_value(weight)
            if w is None or w.dtype != np.float32 or w.size < cfg.min_params:
                continue
            if len(weight.outputs) > 1:
                ctx.note(self.name, node.name, "its weight is shared with other nodes; left dense")
                continue
            mask, why = self._mask(node, w)
            if mask is None:
                ctx.note(self.name, node.name, why)
                continue
            weight.values = np.where(mask, w, np.float32(0)).astype(np.float32)
            layers[node.name] = round(1 - float(mask.mean()), 4)
            zeros += int((~mask).sum())
            total += w.size
        stats = {"pattern": cfg.pattern, "layers": layers, "weights_zeroed": zeros,
                 "sparsity": round(zeros / total, 4) if total else 0.0,
                 "speed_note": ("2:4 runs on sparse tensor cores (TensorRT, Ampere or newer); dense kernels elsewhere"
                                if cfg.pattern == "2:4" else
                                "unstructured zeros shrink the stored file, not the latency of dense kernels")}
        return PassResult(bool(layers), stats)

    def _mask(self, node: gs.Node, w: np.ndarray) -> tuple[Optional[np.ndarray], str]:
        if self.config.pattern == "unstructured":
            return magnitude_mask(w, self.config.sparsity), ""
        if w.ndim < 2:
            return None, f"its weight has rank {w.ndim}; 2:4 needs a matrix or a conv kernel"
        axis = reduction_axis(node, w)
        if w.shape[axis] % 4:
            return None, f"reduction size {w.shape[axis]} is not a multiple of 4 (2:4 groups)"
        if node.op == "Conv" and int(node.attrs.get("group", 1)) > 1:
            return None, "grouped/depthwise conv: sparse tensor cores run dense convolutions only"
        return two_four_mask(w, axis), ""
