"""SmoothQuant: move activation outliers into the weights before quantization (Xiao et al. 2023).

For a MatMul y = x W whose input x has a few channels far larger than the rest (transformer
FFN outputs), per-tensor int8 of x wastes its grid on those channels. With per-input-channel
s = max|x_j|^a / max|W_j|^(1-a):  y = (x / s) (diag(s) W). Exact in real arithmetic, so the pass
is lossless; it only changes how well the tensors quantize. 1/s folds into a LayerNormalization
producer's gamma/beta when all its readers are smoothed together, else it becomes a Mul.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx_graphsurgeon as gs

from hewn.core.pass_infra import Pass, PassResult

from hewn.passes.quant.calibrate import stream_tensors
from hewn.core.graph_utils import const_value, is_graph_output

MARK = "smooth_quant/"  # weights this pass wrote are named so; a second run leaves them alone


class SmoothQuant(Pass):
    name = "smooth_quant"
    lossless = True

    @dataclass(frozen=True)
    class Config:
        alpha: float = 0.5                # migration strength: 0 = none, 1 = all onto the weights
        min_outlier_ratio: float = 8.0    # smooth only when max channel |x| / median channel |x| exceeds this
        fold_only: bool = False           # only where 1/s folds into a LayerNorm (no Mul added: no run-time cost)

    def run(self, graph: gs.Graph, ctx) -> PassResult:
        groups = _groups(graph)
        if not groups:
            return PassResult(False, {"smoothed": 0})
        absmax = _channel_absmax(graph, ctx, list(groups))
        smoothed, skipped = [], {}
        for x_name, nodes in groups.items():
            a = absmax[x_name]
            ratio = float(a.max() / max(np.median(a), 1e-12))
            if ratio < self.config.min_outlier_ratio:
                skipped[x_name] = round(ratio, 2)
                continue
            if self.config.fold_only and not _foldable(graph, graph.tensors()[x_name], nodes, a.shape):
                skipped[x_name] = "1/s would need a Mul (fold_only)"
                continue
            self._smooth(graph, graph.tensors()[x_name], nodes, a, ctx)
            smoothed.append({"input": x_name, "matmuls": [n.name for n in nodes], "outlier_ratio": round(ratio, 2)})
        if smoothed:
            graph.cleanup().toposort()
        return PassResult(bool(smoothed), {"smoothed": len(smoothed), "groups": smoothed,
                                           "below_outlier_ratio": skipped})

    def _smooth(self, graph, x: gs.Tensor, nodes: list[gs.Node], a: np.ndarray, ctx) -> None:
        w_max = np.max([np.abs(const_value(n.inputs[1])).max(axis=1) for n in nodes], axis=0)
        alpha = self.config.alpha
        s = np.where((a > 0) & (w_max > 0), a ** alpha / np.maximum(w_max, 1e-12) ** (1 - alpha), 1.0)
        s = np.clip(s, 1e-4, 1e4).astype(np.float32)
        for n in nodes:
            w = const_value(n.inputs[1]).astype(np.float32)
            n.inputs[1] = gs.Constant(ctx.names.make(MARK.rstrip("/"), n.name, "weight"), w * s[:, None])
        if not self._fold_into_layernorm(graph, x, nodes, s):
            scaled = gs.Variable(ctx.names.make(self.name, x.name, "smoothed"), dtype=x.dtype, shape=x.shape)
            inv = gs.Constant(ctx.names.make(self.name, x.name, "inverse_scale"), (1.0 / s).astype(np.float32))
            graph.nodes.append(gs.Node("Mul", ctx.names.make(self.name, x.name, "Mul"), inputs=[x, inv],
                                       outputs=[scaled]))
            for n in nodes:
                n.inputs[0] = scaled

    @staticmethod
    def _fold_into_layernorm(graph, x: gs.Tensor, nodes, s: np.ndarray) -> bool:
        if not _foldable(graph, x, nodes, s.shape):
            return False
        producer = x.inputs[0]
        gamma = const_value(producer.inputs[1])
        beta = const_value(producer.inputs[2]) if len(producer.inputs) > 2 else None
        producer.inputs[1] = gs.Constant(producer.inputs[1].name + "/smoothed", (gamma / s).astype(gamma.dtype))
        if beta is not None:
            producer.inputs[2] = gs.Constant(producer.inputs[2].name + "/smoothed", (beta / s).astype(beta.dtype))
        return True


def _foldable(graph, x: gs.Tensor, nodes, shape) -> bool:
    """1/s can fold into x's producer: a LayerNormalization read only by `nodes`, gamma/beta of `shape`."""
    producer = x.inputs[0] if x.inputs else None
    if producer is None or producer.op != "LayerNormalization" or is_graph_output(graph, x):
        return False
    if len(producer.outputs) > 1 and any(o.outputs for o in producer.outputs[1:]):
        return False
    if {id(c) for c in x.outputs} != {id(n) for n in nodes} or len(producer.inputs) < 2:
        return False
    gamma = const_value(producer.inputs[1])
    beta = const_value(producer.inputs[2]) if len(producer.inputs) > 2 else None
    return gamma is not None and gamma.shape == tuple(shape) and (beta is None or beta.shape == tuple(shape))


def _groups(graph: gs.Graph) -> dict[str, list[gs.Node]]:
    """Activation tensor -> the MatMuls with a constant 2-D weight that read it (not yet smoothed)."""
    groups: dict[str, list[gs.Node]] = {}
    for node in graph.nodes:
        if node.op != "MatMul" or len(node.inputs) != 2:
            continue
        w = const_value(node.inputs[1])
        x = node.inputs[0]
        if w is None or w.ndim != 2 or w.dtype != np.float32 or const_value(x) is not None:
            continue
        if node.inputs[1].name.startswith(MARK):
            continue
        groups.setdefault(x.name, []).append(node)
    return groups


def _channel_absmax(graph, ctx, names: list[str]) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}

    def visit(_sample, name, value):
        m = np.abs(value.reshape(-1, value.shape[-1])).max(axis=0)
        out[name] = m if name not in out else np.maximum(out[name], m)

    stream_tensors(graph, ctx, names, visit)
    return out
