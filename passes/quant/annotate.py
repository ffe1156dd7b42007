"""Decide which tensor edges get quantized, and how (pt2e's "annotate" step), from a QuantScheme.

The placement follows what ONNX Runtime fuses into integer kernels: DQ -> Conv/Gemm/MatMul -> Q
becomes QLinearConv/QGemm/QLinearMatMul, DQ -> Add -> Q QLinearAdd, DQ -> Reshape -> Q with one
scale an int8 Reshape, Relu/Clip -> Q with zero point at qmin disappears. Every node left in
float gets the reason in `skipped`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import numpy as np
import onnx_graphsurgeon as gs

from hewn.core.names import matches
from hewn.core.graph_utils import const_value, is_graph_output
from hewn.passes.quant.spec import QuantScheme, QuantSpec
from hewn.passes.analysis.shape_inference import ShapeInfo

FLOATS = (np.dtype(np.float32),)
WEIGHTED = ("Conv", "Gemm", "MatMul")


@dataclass(frozen=True)
class WeightEdge:
    node: str
    index: int            # which input of the node
    spec: QuantSpec       # with the per-channel axis filled in


@dataclass
class QuantPlan:
    scheme: QuantScheme
    activations: dict[str, QuantSpec] = field(default_factory=dict)   # tensor -> spec (has its own range)
    shared: dict[str, str] = field(default_factory=dict)              # tensor -> tensor whose range it reuses
    weights: list[WeightEdge] = field(default_factory=list)
    biases: dict[str, str] = field(default_factory=dict)              # node -> its activation input tensor
    static: list[str] = field(default_factory=list)                   # nodes quantized with calibrated ranges
    dynamic: list[str] = field(default_factory=list)                  # nodes quantized at run time
    skipped: dict[str, str] = field(default_factory=dict)             # node -> why it stays float

    def root(self, tensor: str) -> str:
        while tensor in self.shared:
            tensor = self.shared[tensor]
        return tensor

    def summary(self) -> dict:
        return {"scheme": self.scheme.describe(), "static_nodes": len(self.static),
                "dynamic_nodes": len(self.dynamic), "quantized_tensors": len(self.activations) + len(self.shared),
                "weights": len(self.weights), "float_nodes": dict(self.skipped)}


def annotate(graph: gs.Graph, scheme: QuantScheme, info: ShapeInfo, exclude: tuple[str, ...] = ()) -> QuantPlan:
    plan = QuantPlan(scheme)
    for node in graph.nodes:
        if node.op not in scheme.static_ops and node.op not in scheme.dynamic_ops:
            continue
        if matches(node.name, exclude):
            plan.skipped[node.name] = "kept in float (excluded)"
            continue
        why = _quantize_node(graph, node, scheme, info, plan)
        if why:
            plan.skipped[node.name] = why
    _absorb_activations(graph, scheme, plan)
    _share_passthrough(graph, scheme, info, plan, exclude)
    return plan


def _float(t: gs.Tensor, info: ShapeInfo) -> bool:
    return not isinstance(t, gs.Constant) and info.dtype(t.name) in FLOATS


def _weight_axis(node: gs.Node, w: np.ndarray, per_channel: bool) -> Optional[int]:
    if not per_channel:
        return None
    if node.op == "Conv":
        return 0
    if node.op == "Gemm":
        return 0 if node.attrs.get("transB", 0) else 1
    return w.ndim - 1  # MatMul: output columns


def _quantize_node(graph, node, scheme: QuantScheme, info, plan: QuantPlan) -> Optional[str]:
    """Annotate `node` and return None, or return why it stays float."""
    x = node.inputs[0] if node.inputs else None
    if x is None or not _float(x, info):
        return "its first input is not a float activation"
    if node.op in WEIGHTED:
        return _weighted(graph, node, scheme, info, plan)
    if node.op in ("Add", "Mul"):
        if len(node.inputs) != 2 or not all(_float(t, info) for t in node.inputs):
            return "an operand is a constant (only activation x activation runs as QLinearAdd/Mul)"
        if scheme.residual_add_only:
            return _residual_add(node, scheme, plan)
    elif not all(_float(t, info) for t in node.inputs):
        return "an input is not a float activation"
    for t in node.inputs:
        plan.activations.setdefault(t.name, scheme.activation)
    _quantize_output(graph, node, scheme, plan)
    plan.static.append(node.name)
    return None


def _residual_add(node: gs.Node, scheme: QuantScheme, plan: QuantPlan) -> Optional[str]:
    """A residual join (one operand written by a Conv/Gemm/MatMul): quantize the skip operand, so
    the builder fuses the Add into that op's epilogue. Other Adds gain nothing from int8."""
    if node.op != "Add":
        return "only residual Adds are quantized by this scheme"
    weighted = [bool(t.inputs) and t.inputs[0].op in WEIGHTED for t in node.inputs]
    if not any(weighted):
        return "not a residual Add (no operand comes from a Conv/Gemm/MatMul): int8 gains nothing here"
    skip = node.inputs[1] if all(weighted) else node.inputs[weighted.index(False)]
    plan.activations.setdefault(skip.name, scheme.activation)
    plan.static.append(node.name)
    return None


def _too_small(node: gs.Node, w: np.ndarray, minimum: int) -> Optional[str]:
    if node.op == "Conv":
        sizes = {"output channels": w.shape[0], "input channels": w.shape[1] * int(node.attrs.get("group", 1))}
    elif node.op == "Gemm":
        n, k = w.shape if node.attrs.get("transB", 0) else w.shape[::-1]
        sizes = {"K": k, "N": n}
    else:
        sizes = {"K": w.shape[-2], "N": w.shape[-1]}
    small = {k: v for k, v in sizes.items() if v < minimum}
    if small:
        what = ", ".join(f"{k} {v}" for k, v in small.items())
        return f"{what} < {minimum}: int8 kernels pad to {minimum} and run slower than fp16 here"
    return None


def _weighted(graph, node, scheme: QuantScheme, info, plan: QuantPlan) -> Optional[str]:
    w = const_value(node.inputs[1]) if len(node.inputs) > 1 else None
    if node.op == "Gemm" and (node.attrs.get("transA", 0) or float(node.attrs.get("alpha", 1.0)) != 1.0):
        return "Gemm with transA or alpha != 1 has no integer kernel"
    if w is None:
        if node.op == "MatMul" and node.op in scheme.static_ops and _float(node.inputs[1], info):
            for t in node.inputs:  # activation x activation: QLinearMatMul
                plan.activations.setdefault(t.name, scheme.activation)
            _quantize_output(graph, node, scheme, plan)
            plan.static.append(node.name)
            return None
        return "its weight is not a constant"
    if w.dtype != np.float32:
        return f"its weight is {w.dtype}, not float32"
    if node.op == "MatMul" and w.ndim != 2:
        return f"its weight has rank {w.ndim} (integer MatMul kernels take a 2-D weight)"
    if node.op == "Conv" and w.ndim != 4:
        return f"{w.ndim - 2}-D convolution (ORT's QLinearConv covers 2-D)"
    if scheme.min_channels and (why := _too_small(node, w, scheme.min_channels)):
        return why
    axis = _weight_axis(node, w, scheme.per_channel)
    spec = QuantSpec(scheme.weight.dtype, scheme.weight.symmetric, axis, scheme.weight.narrow)
    plan.weights.append(WeightEdge(node.name, 1, spec))
    if node.op in scheme.dynamic_ops and node.op == "MatMul":
        plan.dynamic.append(node.name)
        return None
    if node.op not in scheme.static_ops:
        plan.weights.pop()
        return f"{node.op} is not quantized by scheme {scheme.name}"
    plan.activations.setdefault(node.inputs[0].name, scheme.activation)
    if scheme.bias_int32 and len(node.inputs) > 2 and _bias_ok(node):
        plan.biases[node.name] = node.inputs[0].name
    _quantize_output(graph, node, scheme, plan)
    plan.static.append(node.name)
    return None


def _bias_ok(node: gs.Node) -> bool:
    b = const_value(node.inputs[2])
    return b is not None and b.ndim == 1 and b.dtype == np.float32 and \
        (node.op != "Gemm" or float(node.attrs.get("beta", 1.0)) == 1.0)


def _quantize_output(graph, node, scheme: QuantScheme, plan: QuantPlan) -> None:
    """Quantize the output, except a graph output: the model's result stays float (ORT runs
    Gemm/MatMul as QGemm / MatMulIntegerToFloat with a float output; a final Concat keeps its
    inputs' own scales). One scale over a detector's [boxes in pixels, class scores in 0..1]
    output rounds every score to zero (YOLOv8n measured here: box F1 0.0)."""
    if not scheme.quantize_outputs:
        return
    y = node.outputs[0]
    if is_graph_output(graph, y):
        return
    plan.activations.setdefault(y.name, scheme.activation)


def _absorb_activations(graph, scheme: QuantScheme, plan: QuantPlan) -> None:
    """Conv -> Relu: quantize the Relu's output, not the Conv's. With zero point = qmin the Q
    clamps at zero exactly as Relu does, so ORT fuses the pair away (ReluQuantFusion)."""
    if scheme.activation.symmetric:
        return
    for node in graph.nodes:
        if node.op not in scheme.absorbed_ops or not node.inputs:
            continue
        x = node.inputs[0]
        if x.name not in plan.activations or len(x.outputs) != 1 or is_graph_output(graph, x):
            continue
        if not x.inputs or x.inputs[0].name not in plan.static:
            continue
        if node.op == "Clip" and not _clip_from_zero(node):
            continue
        spec = plan.activations.pop(x.name)
        plan.activations.setdefault(node.outputs[0].name, spec)


def _clip_from_zero(node: gs.Node) -> bool:
    low = const_value(node.inputs[1]) if len(node.inputs) > 1 and node.inputs[1].name else node.attrs.get("min")
    # exporters write the bound as a scalar or as shape [1]
    return low is not None and np.size(low) == 1 and float(np.asarray(low).reshape(-1)[0]) == 0.0


def _share_passthrough(graph, scheme: QuantScheme, info, plan: QuantPlan, exclude: tuple = ()) -> None:
    """Reshape/Transpose/MaxPool... of a quantized tensor reuse its scale: DQ -> op -> Q then runs on
    int8; an excluded one stays float (a detector's decoding tail starts with such reshapes)."""
    for node in graph.nodes:
        if node.op not in scheme.passthrough_ops or not node.inputs or len(node.outputs) != 1:
            continue
        if matches(node.name, exclude):
            continue
        x, y = node.inputs[0], node.outputs[0]
        if (x.name in plan.activations or x.name in plan.shared) and _float(y, info) and y.name not in plan.shared:
            plan.activations.pop(y.name, None)
            plan.shared[y.name] = x.name
