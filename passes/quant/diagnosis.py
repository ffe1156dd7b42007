"""Per-layer quantization error: where the accuracy went.

The quantized graph keeps every tensor name of the float graph (InsertQDQ writes the dequantized
value under the original name), so each weighted layer's output can be compared directly:
SQNR = 10 log10(sum ref^2 / sum (ref - quant)^2), in dB, accumulated error up to that layer.
"""
from __future__ import annotations

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from hewn.core.ir import to_model
from hewn.core.runtime import make_session, run

WEIGHTED = ("Conv", "Gemm", "MatMul")


def module_name(node_name: str) -> str:
    """'/bert/encoder/layer.0/output/dense/MatMul' -> 'bert.encoder.layer.0.output.dense' (torch export scopes)."""
    if not node_name.startswith("/") or node_name.count("/") < 2:
        return ""
    return ".".join(part for part in node_name.strip("/").split("/")[:-1])


def layer_errors(float_model: onnx.ModelProto, quantized: gs.Graph, feeds, float_layers=(), ir_version: int = 8) -> list[dict]:
    layers = [(n.name, n.op_type, n.output[0]) for n in float_model.graph.node if n.op_type in WEIGHTED and n.output]
    names = [out for _, _, out in layers]
    ref = _run_with_outputs(float_model, names, feeds)
    quant_model = to_model(quantized.copy(), ir_version=ir_version)
    present = {t.name for t in quantized.tensors().values()}
    names_q = [n for n in names if n in present]
    got = _run_with_outputs(quant_model, names_q, feeds)
    rows = []
    for (node, op, out) in layers:
        if out not in got:
            continue
        signal = sum(float(np.sum(r.astype(np.float64) ** 2)) for r in ref[out])
        noise = sum(float(np.sum((r.astype(np.float64) - q) ** 2)) for r, q in zip(ref[out], got[out]))
        sqnr = 10 * np.log10(signal / noise) if noise > 0 else float("inf")
        rows.append({"node": node, "module": module_name(node), "op": op, "output": out,
                     "precision": "float" if node in float_layers else "int8", "sqnr_db": round(float(sqnr), 2)})
    return rows


def _run_with_outputs(model: onnx.ModelProto, names, feeds) -> dict[str, list[np.ndarray]]:
    graph = gs.import_onnx(model)
    tensors = graph.tensors()
    graph.outputs = [tensors[n] for n in names]
    for t in graph.outputs:
        t.dtype = t.dtype or np.float32
    session = make_session(to_model(graph, ir_version=max(model.ir_version, 7)), optimize=False)
    out: dict[str, list[np.ndarray]] = {n: [] for n in names}
    for feed in feeds:
        for n, v in zip(names, run(session, names, feed)):
            out[n].append(v)
    return out


def costliest(rows: list[dict], count: int = 10) -> list[dict]:
    """The layers with the lowest SQNR that are quantized (where the error enters)."""
    def sqnr(r):  # null: no noise at all (an infinite SQNR)
        return float("inf") if r["sqnr_db"] is None else r["sqnr_db"]
    return sorted((r for r in rows if r["precision"].startswith("int8")), key=sqnr)[:count]


def emitted_precision(model: onnx.ModelProto, rows: list[dict]) -> list[dict]:
    """Each layer row's precision as the emitted graph runs it (not as the plan meant it): found by
    the layer's output tensor. A weighted node fed by DequantizeLinear on both inputs is int8;
    on the weight only, int8 weights with float activations; the DynamicQuantizeLinear ->
    MatMulInteger chain is dynamic int8; anything else is float."""
    producer = {out: n for n in model.graph.node for out in n.output}
    outputs = {n.name: n.output[0] for n in model.graph.node if n.output}

    def made_by(tensor: str, op: str) -> bool:
        node = producer.get(tensor)
        return node is not None and node.op_type == op

    def precision(row: dict) -> str:
        node = producer.get(row.get("output") or outputs.get(row["node"], ""))
        while node is not None and node.op_type in ("QuantizeLinear", "DequantizeLinear"):
            node = producer.get(node.input[0])  # the layer's own output quantized: look at the layer
        if node is None:
            return "float"
        if node.op_type in WEIGHTED and len(node.input) > 1:
            weight, activation = made_by(node.input[1], "DequantizeLinear"), made_by(node.input[0], "DequantizeLinear")
            return "int8" if weight and activation else "int8 weights" if weight else "float"
        chain, seen = [node], set()
        while chain:  # Mul <- Cast <- MatMulInteger (dynamic): a few steps up at most
            n = chain.pop()
            if n.op_type in ("MatMulInteger", "ConvInteger"):
                return "int8 (dynamic)"
            if n.name in seen or len(seen) > 6 or n.op_type not in ("Mul", "Cast", "Add"):
                continue
            seen.add(n.name)
            chain.extend(producer[i] for i in n.input if i in producer)
        return "float"
    return [{**row, "precision": precision(row)} for row in rows]
