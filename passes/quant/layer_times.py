"""Measured int8 vs float time of each quantized layer on this machine (issue 27, Build 3).

A layer is timed the way it sits in the quantized model: its int8 input dequantized, the op, and
its output quantized again. int8: ORT fuses DQ -> op(DQ weight) -> Q into one QLinearConv / QGemm /
QLinearMatMul. Float in context: the same DQ -> op(float weight) -> Q, i.e. the layer left float
inside an int8 model, conversions included. The difference is what int8 saves on that layer;
a depthwise or tiny layer where it is <= 0 does not pay, so mixed precision keeps it float for
free and spends the accuracy budget where int8 saves the most time.

One-node models, both variants timed round-robin, medians; cached per machine and ORT version
(the shapes, attributes and quantization types are the key), as the weight-only kernel times are.
"""
from __future__ import annotations

import hashlib
import time
from pathlib import Path
from typing import Optional

import numpy as np
import onnx
import onnx_graphsurgeon as gs
from onnx import helper, numpy_helper

from hewn.core.graph_utils import const_value
from hewn.core.runtime import make_session, time_interleaved
from hewn.passes.quant.weight_only.kernels import machine_cache_path, read_table, write_table

RUNS = 30
WEIGHTED = ("Conv", "Gemm", "MatMul")
FUSED_ACTIVATIONS = ("Relu", "Clip")
TIME_LIMIT_S = 30.0
SLOWER = 1.15        # int8 this much slower than float in context (and by MIN_MS): the layer stays float
MIN_MS = 0.005       # below this difference a single-layer timing is noise


def slower_in_int8(row: dict) -> bool:
    return row["int8_ms"] > SLOWER * row["float_ms"] and row["int8_ms"] - row["float_ms"] > MIN_MS


def layer_times_how() -> str:
    return (f"each quantized layer as a one-node model in ORT (2 threads): int8 = DQ -> op(int8 weight) -> Q, "
            f"fused by ORT; float = the same layer float inside the int8 model (DQ -> op -> Q); medians of "
            f"{RUNS} interleaved runs, cached per machine and ORT version. A layer whose int8 measures over "
            f"{SLOWER:g}x its float time stays float; mixed precision moves layers to float by accuracy gained "
            f"per millisecond int8 saves")


def _dq_parts(tensor) -> Optional[tuple]:
    """(values, scale, zero, axis) of a DequantizeLinear with constant inputs feeding `tensor`."""
    node = tensor.inputs[0] if tensor.inputs else None
    if node is None or node.op != "DequantizeLinear":
        return None
    values = [const_value(t) for t in node.inputs[:3]]
    if values[1] is None or (len(values) > 2 and values[2] is None):
        return None
    zero = values[2] if len(values) > 2 else np.zeros_like(values[1], dtype=np.uint8)
    return values[0], values[1], zero, int(node.attrs.get("axis", 1))


def _layer(node: gs.Node) -> Optional[dict]:
    """What a one-node model of `node` (in a quantized graph) needs, or None when it is not a
    quantized layer with an int8 input and weight."""
    if node.op not in WEIGHTED or len(node.inputs) < 2:
        return None
    x, w = _dq_parts(node.inputs[0]), _dq_parts(node.inputs[1])
    if x is None or w is None or w[0] is None or x[0] is not None:
        return None   # the input must be a dequantized activation, the weight a dequantized constant
    out, act = node.outputs[0], None
    if len(out.outputs) == 1 and out.outputs[0].op in FUSED_ACTIVATIONS and not any(
            t.name for t in out.outputs[0].inputs[1:] if const_value(t) is None):
        act = out.outputs[0]
        out = act.outputs[0]
    q = next((c for c in out.outputs if c.op == "QuantizeLinear"), None)
    qparts = None
    if q is not None:
        scale, zero = const_value(q.inputs[1]), const_value(q.inputs[2]) if len(q.inputs) > 2 else None
        if scale is not None and zero is not None:
            qparts = (scale, zero)
    bias = const_value(node.inputs[2]) if len(node.inputs) > 2 and node.inputs[2].name else None
    return {"node": node, "x": x, "w": w, "bias": bias, "act": act,
            "q": qparts}


def _model(layer: dict, shape: tuple, int8: bool) -> onnx.ModelProto:
    node, (_, xs, xz, xaxis), (wq, ws, wz, waxis) = layer["node"], layer["x"], layer["w"]
    inits = [numpy_helper.from_array(np.asarray(xs), "xs"), numpy_helper.from_array(np.asarray(xz), "xz")]
    nodes = [helper.make_node("DequantizeLinear", ["X", "xs", "xz"], ["x"], axis=xaxis)]
    if int8:
        inits += [numpy_helper.from_array(wq, "wq"), numpy_helper.from_array(np.asarray(ws), "ws"),
                  numpy_helper.from_array(np.asarray(wz), "wz")]
        nodes.append(helper.make_node("DequantizeLinear", ["wq", "ws", "wz"], ["w"], axis=waxis))
    else:
        shape_w = [1] * wq.ndim
        shape_w[waxis] = -1
        scale = np.asarray(ws, np.float32).reshape(shape_w) if np.ndim(ws) else np.float32(ws)
        zero = np.asarray(wz, np.float32).reshape(shape_w) if np.ndim(wz) else np.float32(wz)
        inits.append(numpy_helper.from_array(((wq.astype(np.float32) - zero) * scale).astype(np.float32), "w"))
    ins = ["x", "w"]
    if layer["bias"] is not None:
        inits.append(numpy_helper.from_array(layer["bias"].astype(np.float32), "b"))
        ins.append("b")
    nodes.append(helper.make_node(node.op, ins, ["y"], **node.attrs))
    last = "y"
    if layer["act"] is not None:
        act = layer["act"]
        extra = []
        for i, t in enumerate(act.inputs[1:]):
            if t.name:
                inits.append(numpy_helper.from_array(np.asarray(const_value(t)), f"a{i}"))
                extra.append(f"a{i}")
            else:
                extra.append("")
        nodes.append(helper.make_node(act.op, ["y", *extra], ["ya"], **act.attrs))
        last = "ya"
    out_type = onnx.TensorProto.FLOAT
    if layer["q"] is not None:
        ys, yz = layer["q"]
        inits += [numpy_helper.from_array(np.asarray(ys), "ys"), numpy_helper.from_array(np.asarray(yz), "yz")]
        nodes.append(helper.make_node("QuantizeLinear", [last, "ys", "yz"], ["Y"]))
        out_type = helper.np_dtype_to_tensor_dtype(np.asarray(yz).dtype)
    else:
        nodes.append(helper.make_node("Identity", [last], ["Y"]))
    x_type = helper.np_dtype_to_tensor_dtype(np.asarray(xz).dtype)
    graph = helper.make_graph(nodes, "layer", [helper.make_tensor_value_info("X", x_type, list(shape))],
                              [helper.make_tensor_value_info("Y", out_type, None)], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def _key(layer: dict, shape: tuple, threads: int) -> str:
    node = layer["node"]
    parts = [node.op, repr(sorted((k, repr(v)) for k, v in node.attrs.items())), repr(shape),
             repr(layer["w"][0].shape), str(np.asarray(layer["x"][2]).dtype), str(layer["w"][0].dtype),
             layer["act"].op if layer["act"] is not None else "", "q" if layer["q"] is not None else "",
             "b" if layer["bias"] is not None else "", f"t{threads}"]
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:20]


class LayerTimes:
    """{node name: {"float_ms", "int8_ms", "saved_ms"}} for the quantized layers of a graph."""

    def __init__(self, threads: int = 2, path: Optional[Path] = None):
        self.threads, self.path = threads, path or machine_cache_path("layers-v1")
        self.table = {k: v for k, v in read_table(self.path).items()
                      if isinstance(v, dict) and all(isinstance(v.get(m), (int, float)) and 0 <= v[m] < 1e4
                                                     for m in ("float_ms", "int8_ms"))}
        self.measured = self.cached = 0

    def measure(self, graph: gs.Graph, names: list[str], input_shapes: dict[str, tuple],
                time_limit_s: float = TIME_LIMIT_S) -> dict:
        """Times of the named layers of quantized `graph`; `input_shapes`: the float input tensor's
        shape of each layer (from a run of the float model). Layers past the time limit or not
        quantized as expected are left out."""
        wanted = set(names)
        out, deadline = {}, time.perf_counter() + time_limit_s
        for node in graph.nodes:
            if node.name not in wanted:
                continue
            layer = _layer(node)
            shape = input_shapes.get(node.name)
            if layer is None or shape is None:
                continue
            key = _key(layer, shape, self.threads)
            if key not in self.table:
                if time.perf_counter() > deadline:
                    continue
                self.table[key] = self._time(layer, shape)
                self.measured += 1
            else:
                self.cached += 1
            row = dict(self.table[key])
            row["saved_ms"] = round(row["float_ms"] - row["int8_ms"], 5)
            out[node.name] = row
        self.save()
        return out

    def _time(self, layer: dict, shape: tuple) -> dict:
        dtype = np.asarray(layer["x"][2]).dtype
        info = np.iinfo(dtype)
        feed = {"X": np.random.default_rng(0).integers(info.min, info.max + 1, shape).astype(dtype)}
        sessions = [make_session(_model(layer, shape, int8), threads=self.threads) for int8 in (False, True)]
        (f, q), _ = time_interleaved(sessions, feed, RUNS, warmup=3)
        return {"float_ms": round(f * 1e3, 5), "int8_ms": round(q * 1e3, 5)}

    def summary(self) -> dict:
        return {"cache": str(self.path), "measured_now": self.measured, "cached": self.cached}

    def save(self) -> None:
        if self.measured:
            write_table(self.path, self.table)


def input_shapes(float_model: onnx.ModelProto, names: list[str], feed: dict) -> dict:
    """{layer: shape of its activation input} from one run of the float model on `feed`."""
    from hewn.passes.quant.diagnosis import _run_with_outputs

    wanted = set(names)
    tensors = {}
    for node in gs.import_onnx(float_model).nodes:
        if node.name in wanted and node.inputs and node.inputs[0].name:
            tensors[node.name] = node.inputs[0].name
    if not tensors:
        return {}
    values = _run_with_outputs(float_model, sorted(set(tensors.values())), [feed])
    return {n: tuple(values[t][0].shape) for n, t in tensors.items() if t in values}


__all__ = ["LayerTimes", "input_shapes"]
