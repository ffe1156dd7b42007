"""InsertQDQ: quantize a float graph with a target's scheme (annotate -> calibrate -> insert).

    InsertQDQ(InsertQDQ.Config(scheme="static_u8s8_reduced", method="entropy")).run(graph, ctx)

Activations: one QuantizeLinear/DequantizeLinear pair per quantized tensor, shared by all its
readers (the producer writes `<name>/float`, the DQ writes the original name, so downstream
readers and graph outputs keep their names). Weights: int8 initializers + DequantizeLinear
(per-channel), so the file shrinks ~4x. Biases of QLinearConv/QGemm: int32 with scale
s_x * s_w. Dynamic nodes: DynamicQuantizeLinear + MatMulInteger + scale (ORT fuses that into
DynamicQuantizeMatMul).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import numpy as np
import onnx_graphsurgeon as gs

from hewn.core.errors import ConfigError, InputMismatchError
from hewn.core.pass_infra import Pass, PassResult

from hewn.passes.quant.calibrate import Calibrate
from hewn.core.graph_utils import const_value, is_graph_input, name_nodes
from hewn.passes.quant.histogram import ESTIMATORS
from hewn.passes.quant.annotate import QuantPlan, WeightEdge, annotate
from hewn.passes.quant.spec import SCHEMES, QuantScheme, QuantSpec
from hewn.passes.analysis.shape_inference import ShapeInfo

QUANT_OPS = ("QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear", "MatMulInteger", "ConvInteger",
             "QLinearConv", "QLinearMatMul")


def scheme_for(name: str, ctx) -> QuantScheme:
    schemes = {s.name: s for s in ctx.target.quant_schemes} or SCHEMES
    if not name:
        return next(iter(schemes.values()))
    if name not in SCHEMES:
        raise ConfigError(f"unknown quantization scheme {name!r}; known schemes: {', '.join(SCHEMES)}")
    return SCHEMES[name]


def already_quantized(graph: gs.Graph) -> bool:
    return any(node.op in QUANT_OPS for node in graph.nodes)


class InsertQDQ(Pass):
    name = "insert_qdq"
    requires = (ShapeInfo, Calibrate)
    lossless = False
    min_opset = 13  # per-axis QuantizeLinear/DequantizeLinear

    @dataclass(frozen=True)
    class Config:
        scheme: str = ""             # a name from hewn.passes.quant.spec.SCHEMES; "" = the target's first
        method: str = "minmax"       # calibration: minmax | percentile | entropy | mse
        percentile: float = 99.99
        exclude: tuple[str, ...] = field(default=())  # node names or globs kept in float (hewn.core.names)

        def __post_init__(self) -> None:  # validated at construction
            if self.method not in ESTIMATORS:
                raise ConfigError(f"unknown calibration method {self.method!r}; choose one of {sorted(ESTIMATORS)}")
            if self.scheme and self.scheme not in SCHEMES:
                raise ConfigError(f"unknown quantization scheme {self.scheme!r}; known schemes: {', '.join(SCHEMES)}")

    def run(self, graph: gs.Graph, ctx) -> PassResult:
        cfg = self.config
        if already_quantized(graph):
            ctx.note(self.name, "model", "the model already contains quantization ops; left as it is")
            return PassResult(False, {"already_quantized": True})
        scheme = scheme_for(cfg.scheme, ctx)
        name_nodes(graph)
        plan = annotate(graph, scheme, ctx.analysis(ShapeInfo, graph), tuple(cfg.exclude))
        for node, why in plan.skipped.items():
            ctx.note(self.name, node, why)
        if not plan.static and not plan.dynamic:
            return PassResult(False, plan.summary(), artifact=plan)
        cal = ctx.analysis(Calibrate, graph) if plan.activations else None
        params = self._activation_params(plan, cal, ctx) if cal is not None else {}
        Inserter(graph, plan, params, ctx, self.name).run()
        graph.cleanup().toposort()
        stats = plan.summary()
        stats["method"] = cfg.method
        if params:
            stats["calibration"] = {"samples": cal.samples, "seconds": round(cal.seconds, 3), "data": cal.source}
        return PassResult(True, stats, artifact=plan)

    def _activation_params(self, plan: QuantPlan, cal: Calibrate, ctx) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        kw = {"percentile": self.config.percentile} if self.config.method == "percentile" else {}
        params = {}
        for tensor, spec in plan.activations.items():
            if tensor not in cal.histograms:
                continue  # not a float activation after all (no dtype known): stays float
            if tensor in cal.infinite:
                ctx.note(self.name, cal.producers.get(tensor, tensor),
                              f"output '{tensor}' holds -Inf on calibration sample {cal.infinite[tensor]} "
                              f"(an attention mask): left in float")
                continue
            if tensor in cal.overflow:
                raise InputMismatchError(
                    f"calibration sample {cal.overflow[tensor]} produces +Inf/NaN in tensor '{tensor}' (written by "
                    f"'{cal.producers.get(tensor)}'), which {self.name} would quantize: the model overflows on "
                    f"that input (check its preprocessing), or exclude the reading node with exclude=(...)")
            lo, hi = cal.range(tensor, spec, self.config.method, **kw)
            params[tensor] = spec.params(lo, hi)
        for tensor in plan.shared:
            root = plan.root(tensor)
            if root in params:
                params[tensor] = params[root]
        return params


class Inserter:
    """Graph surgery for one QuantPlan (kept apart from the pass so MixedPrecision can reuse it)."""

    def __init__(self, graph: gs.Graph, plan: QuantPlan, params: dict, ctx, pass_name: str):
        self.graph, self.plan, self.params, self.ctx, self.pass_name = graph, plan, params, ctx, pass_name
        self.nodes = {n.name: n for n in graph.nodes}
        self.tensors = graph.tensors()
        self.weight_cache: dict[tuple, tuple[gs.Variable, np.ndarray]] = {}

    def _name(self, anchor: str, role: str) -> str:
        return self.ctx.names.make(self.pass_name, anchor, role)

    def run(self) -> None:
        plan = self.plan
        for tensor in list(plan.activations) + list(plan.shared):
            if tensor in self.params:
                self._activation(self.tensors[tensor], *self.params[tensor], self._spec(tensor))
        for edge in plan.weights:
            node = self.nodes[edge.node]
            if edge.node in plan.dynamic:
                self._dynamic(node, edge)
            else:
                x_scale = None
                if edge.node in plan.biases and plan.biases[edge.node] in self.params:
                    x_scale = self.params[plan.biases[edge.node]][0]
                floor = _bias_floor(node, x_scale) if x_scale is not None else None
                dq, scale = self._weight(node.inputs[edge.index], edge.spec, floor)
                node.inputs[edge.index] = dq
                if x_scale is not None:
                    self._bias(node, scale, x_scale)

    def _spec(self, tensor: str) -> QuantSpec:
        return self.plan.activations.get(self.plan.root(tensor), self.plan.scheme.activation)

    def _activation(self, t: gs.Tensor, scale, zero, spec: QuantSpec) -> None:
        """Producer -> t/float -> Q -> DQ -> t: every reader of t (and a graph output t) now sees
        the dequantized value under the same name."""
        if is_graph_input(self.graph, t) or not t.inputs:
            floating = t
            out = gs.Variable(self._name(t.name, "dequantized"), dtype=t.dtype, shape=t.shape)
            readers = list(t.outputs)
        else:
            producer = t.inputs[0]
            floating = gs.Variable(f"{t.name}/float", dtype=t.dtype, shape=t.shape)
            producer.outputs[producer.outputs.index(t)] = floating
            out, readers = t, []
        s = gs.Constant(self._name(t.name, "scale"), np.asarray(scale, np.float32))
        z = gs.Constant(self._name(t.name, "zero_point"), np.asarray(zero))
        q = gs.Variable(self._name(t.name, "quantized"), dtype=z.values.dtype, shape=t.shape)
        self.graph.nodes.append(gs.Node("QuantizeLinear", self._name(t.name, "QuantizeLinear"),
                                        inputs=[floating, s, z], outputs=[q]))
        dq = gs.Node("DequantizeLinear", self._name(t.name, "DequantizeLinear"), inputs=[q, s, z], outputs=[out])
        self.graph.nodes.append(dq)
        for reader in readers:
            if reader.op == "QuantizeLinear" and reader.inputs[0] is floating:
                continue
            for i, inp in enumerate(reader.inputs):
                if inp is t:
                    reader.inputs[i] = out

    def _weight(self, w: gs.Tensor, spec: QuantSpec, floor: Optional[np.ndarray] = None) -> tuple[gs.Variable, np.ndarray]:
        """int8 weight + DequantizeLinear; `floor`: the smallest per-channel scale at which the
        layer's int32 bias still fits (a dead channel's ~1e-9 weights give a scale so small that
        its bias overflows int32 at s_x * s_w)."""
        values = const_value(w).astype(np.float32)
        lo, hi = _channel_range(values, spec.axis)
        scale, zero = spec.params(lo, hi)
        if floor is not None and np.ndim(scale) == 1 and floor.shape == scale.shape and (floor > scale).any():
            scale = np.maximum(scale, floor).astype(scale.dtype)
        key = (w.name, spec, scale.tobytes())
        if key in self.weight_cache:
            return self.weight_cache[key]
        q_values = spec.quantize(values, scale, zero, spec.axis)
        q = gs.Constant(self._name(w.name, "int8"), q_values)
        s = gs.Constant(self._name(w.name, "scale"), scale)
        z = gs.Constant(self._name(w.name, "zero_point"), zero)
        out = gs.Variable(self._name(w.name, "dequantized"), dtype=np.float32, shape=values.shape)
        attrs = {"axis": spec.axis} if spec.axis is not None else {}
        self.graph.nodes.append(gs.Node("DequantizeLinear", self._name(w.name, "DequantizeLinear"),
                                        attrs=attrs, inputs=[q, s, z], outputs=[out]))
        self.weight_cache[key] = (out, scale)
        return out, scale

    def _bias(self, node: gs.Node, w_scale: np.ndarray, x_scale: np.ndarray) -> None:
        """int32 bias at scale s_x * s_w: what QLinearConv/QGemm add to the int32 accumulator."""
        b = const_value(node.inputs[2]).astype(np.float64)
        scale = (np.asarray(x_scale, np.float64) * np.asarray(w_scale, np.float64)).astype(np.float32)
        scale = np.broadcast_to(scale, b.shape).copy() if scale.ndim else scale
        q = np.clip(np.round(b / scale), -(2**31), 2**31 - 1).astype(np.int32)
        anchor = node.inputs[2].name
        out = gs.Variable(self._name(anchor, "dequantized"), dtype=np.float32, shape=b.shape)
        attrs = {"axis": 0} if scale.ndim else {}
        zero = np.zeros(scale.shape, np.int32)
        self.graph.nodes.append(gs.Node(
            "DequantizeLinear", self._name(anchor, "DequantizeLinear"), attrs=attrs,
            inputs=[gs.Constant(self._name(anchor, "int32"), q), gs.Constant(self._name(anchor, "scale"), scale),
                    gs.Constant(self._name(anchor, "zero_point"), zero)], outputs=[out]))
        node.inputs[2] = out

    def _dynamic(self, node: gs.Node, edge: WeightEdge) -> None:
        """MatMul(x, W) -> DynamicQuantizeLinear(x) -> MatMulInteger(xq, Wq, xz, Wz) -> Cast -> * (sx*sw),
        the pattern ORT fuses into DynamicQuantizeMatMul (a following bias Add is fused too)."""
        w = const_value(node.inputs[1]).astype(np.float32)
        spec = edge.spec
        lo, hi = _channel_range(w, spec.axis)
        scale, zero = spec.params(lo, hi)
        anchor = node.name
        v = lambda role, dtype: gs.Variable(self._name(anchor, role), dtype=dtype)  # noqa: E731
        xq, xs, xz, acc, accf, s = v("x_quantized", np.uint8), v("x_scale", np.float32), v("x_zero_point", np.uint8), \
            v("int32", np.int32), v("float", np.float32), v("scale", np.float32)
        wq = gs.Constant(self._name(anchor, "weight_int8"), spec.quantize(w, scale, zero, spec.axis))
        ws = gs.Constant(self._name(anchor, "weight_scale"), scale)
        wz = gs.Constant(self._name(anchor, "weight_zero_point"), zero)
        y = node.outputs[0]
        new = [
            gs.Node("DynamicQuantizeLinear", self._name(anchor, "DynamicQuantizeLinear"), inputs=[node.inputs[0]],
                    outputs=[xq, xs, xz]),
            gs.Node("MatMulInteger", self._name(anchor, "MatMulInteger"), inputs=[xq, wq, xz, wz], outputs=[acc]),
            gs.Node("Cast", self._name(anchor, "Cast"), attrs={"to": np.float32}, inputs=[acc], outputs=[accf]),
            gs.Node("Mul", self._name(anchor, "ScaleMul"), inputs=[xs, ws], outputs=[s]),
            gs.Node("Mul", self._name(anchor, "Mul"), inputs=[accf, s], outputs=[y]),
        ]
        node.inputs.clear()
        node.outputs.clear()
        self.graph.nodes.extend(new)


def _bias_floor(node: gs.Node, x_scale) -> Optional[np.ndarray]:
    """Per output channel, |b| / (s_x (2^31 - 1)): below it a weight scale overflows the int32 bias."""
    if len(node.inputs) < 3 or not node.inputs[2].name:
        return None
    b = const_value(node.inputs[2])
    if b is None or b.ndim != 1 or np.ndim(x_scale) != 0:
        return None
    return (np.abs(b.astype(np.float64)) / (float(x_scale) * (2**31 - 1))).astype(np.float32)


def _channel_range(w: np.ndarray, axis: Optional[int]) -> tuple[np.ndarray, np.ndarray]:
    if axis is None:
        return np.asarray(w.min()), np.asarray(w.max())
    reduce = tuple(i for i in range(w.ndim) if i != axis)
    return w.min(axis=reduce), w.max(axis=reduce)
