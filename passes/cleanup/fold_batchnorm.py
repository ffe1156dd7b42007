"""FoldBatchNorm: fold an inference BatchNormalization into the Conv/ConvTranspose/Gemm/MatMul before it.

BN(y) = s * (y - mean) + beta with s = gamma / sqrt(var + eps), per channel (axis 1). With
y = W x + b that is (s W) x + (s (b - mean) + beta): scale the weight's output channels, new bias.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np
import onnx_graphsurgeon as gs

from hewn.core.pass_infra import Pass, PassResult

from hewn.core.graph_utils import bypass, const_value, sole_consumer
from hewn.passes.analysis.shape_inference import ShapeInfo


@dataclass(frozen=True)
class _BN:
    scale: np.ndarray  # gamma / sqrt(var + eps)
    shift: np.ndarray  # beta - mean * scale


def _bn_params(node: gs.Node) -> Optional[_BN]:
    if len(node.outputs) != 1 or node.attrs.get("training_mode", 0):
        return None
    values = [const_value(t) for t in node.inputs[1:5]]
    if any(v is None for v in values):
        return None
    gamma, beta, mean, var = (v.astype(np.float64) for v in values)
    scale = gamma / np.sqrt(var + float(node.attrs.get("epsilon", 1e-5)))
    return _BN(scale, beta - mean * scale)


def _fold_weight(producer: gs.Node, w: np.ndarray, scale: np.ndarray) -> Optional[np.ndarray]:
    """The weight with its output channels scaled, or None when the layout is not foldable."""
    op = producer.op
    if op == "Conv" and w.shape[0] == scale.size:
        return w * scale.reshape((-1,) + (1,) * (w.ndim - 1))
    if op == "ConvTranspose":
        group = int(producer.attrs.get("group", 1))
        per_group = w.shape[1]  # weight is (C_in, C_out / group, k...)
        if per_group * group != scale.size:
            return None
        grouped = w.reshape((group, w.shape[0] // group, per_group) + w.shape[2:])
        return (grouped * scale.reshape((group, 1, per_group) + (1,) * (w.ndim - 2))).reshape(w.shape)
    if op == "Gemm" and w.ndim == 2:  # alpha scales A·B, so it commutes with the channel scale
        if producer.attrs.get("transB", 0):
            return w * scale[:, None] if w.shape[0] == scale.size else None
        return w * scale[None, :] if w.shape[1] == scale.size else None
    if op == "MatMul" and w.ndim == 2 and w.shape[1] == scale.size:
        return w * scale[None, :]
    return None


def _output_rank_ok(producer: gs.Node, y: gs.Tensor, info: ShapeInfo) -> bool:
    # For Gemm/MatMul the BN channel axis (1) is the output feature axis only for 2-D outputs.
    if producer.op not in ("Gemm", "MatMul"):
        return True
    shape = info.shape(y.name)
    return shape is not None and len(shape) == 2


def _bias_foldable(producer: gs.Node, channels: int) -> bool:
    if producer.op == "MatMul" or len(producer.inputs) < 3 or not producer.inputs[2].name:
        return True
    b = const_value(producer.inputs[2])
    return b is not None and b.size in (1, channels)


class FoldBatchNorm(Pass):
    name = "fold_batchnorm"

    def run(self, graph: gs.Graph, ctx) -> PassResult:
        folded, kept = [], []
        for bn in list(graph.nodes):
            if bn.op != "BatchNormalization" or not bn.inputs:
                continue
            reason = self._try_fold(graph, bn, ctx)
            (kept.append(f"{bn.name}: {reason}") if reason else folded.append(bn.name))
        if folded:
            graph.cleanup()
        stats = {"folded": len(folded)}
        if kept:
            stats["kept"] = kept
        return PassResult(modified=bool(folded), stats=stats)

    def _try_fold(self, graph: gs.Graph, bn: gs.Node, ctx) -> Optional[str]:
        """Folds `bn` and returns None, or returns why it stays."""
        y = bn.inputs[0]
        if len(y.inputs) != 1:
            return "its input is not produced by a node"
        producer = y.inputs[0]
        if producer.op not in ("Conv", "ConvTranspose", "Gemm", "MatMul"):
            return f"follows {producer.op}, not Conv/ConvTranspose/Gemm/MatMul"
        if sole_consumer(graph, y) is not bn:
            return f"the output of {producer.name} is also read elsewhere"
        params = _bn_params(bn)
        if params is None:
            return "training mode, or non-constant statistics"
        w = const_value(producer.inputs[1]) if len(producer.inputs) > 1 else None
        if w is None or not _output_rank_ok(producer, y, ctx.analysis(ShapeInfo, graph)):
            return f"{producer.name} has a non-constant weight or a non-2-D output"
        if not _bias_foldable(producer, params.scale.size):
            return f"the bias of {producer.name} is not per-channel"
        new_w = _fold_weight(producer, w.astype(np.float64), params.scale)
        if new_w is None:
            return f"the weight layout of {producer.name} does not match the BN channel count"
        self._rewrite(graph, producer, bn, new_w.astype(w.dtype), params, ctx)
        return None

    def _rewrite(self, graph, producer, bn, new_w, params: _BN, ctx) -> None:
        dtype = new_w.dtype
        old_b = None
        if producer.op != "MatMul" and len(producer.inputs) > 2 and producer.inputs[2].name:
            old_b = const_value(producer.inputs[2])
        if old_b is not None and old_b.size != params.scale.size:
            old_b = np.broadcast_to(old_b.reshape(-1), params.scale.shape)
        if producer.op == "Gemm":
            beta = float(producer.attrs.get("beta", 1.0))
            old_b = None if old_b is None else old_b * beta
            producer.attrs["beta"] = 1.0
        bias = params.shift if old_b is None else params.shift + params.scale * old_b.astype(np.float64).reshape(-1)
        anchor = producer.name or producer.outputs[0].name
        w_const = gs.Constant(ctx.names.make(self.name, anchor, "weight"), new_w)
        b_const = gs.Constant(ctx.names.make(self.name, anchor, "bias"), bias.astype(dtype))
        producer.inputs[1] = w_const
        if producer.op == "MatMul":
            # MatMul has no bias input: add it with a broadcast Add after the product.
            summed = gs.Variable(ctx.names.make(self.name, anchor, "biased"), dtype=dtype)
            add = gs.Node("Add", ctx.names.make(self.name, anchor, "Add"), inputs=[producer.outputs[0], b_const],
                          outputs=[summed])
            graph.nodes.append(add)
            bypass(graph, bn, keep=summed, drop=bn.outputs[0])
            return
        if len(producer.inputs) > 2:
            producer.inputs[2] = b_const
        else:
            producer.inputs.append(b_const)
        bypass(graph, bn, keep=producer.outputs[0], drop=bn.outputs[0])
