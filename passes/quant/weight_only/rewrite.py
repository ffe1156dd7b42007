"""Weight-only block quantization of an ONNX model: MatMul with a constant weight becomes
`MatMulNBits` (com.microsoft), a Gather from a constant table (a token embedding) becomes
`GatherBlockQuantized`. Activations stay float; the kernels dequantize per block (or, with
accuracy_level 4, quantize activations to int8 per block inside the kernel).

A tied `lm_head` (its weight the embedding transposed, as torch exports tied weights) shares
one quantized table with the embedding (the lm_head's rounding): the file holds it once, and the
Gather reads it through Reshapes that ORT folds when the session starts.

What cannot be rewritten (K not a multiple of the block, a weight that is not a constant) stays
float and is listed with the reason.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import helper, numpy_helper

from hewn.passes.quant.weight_only.block_quant import Blocks

MS = "com.microsoft"


@dataclass
class Target:
    """A weight hewn can quantize: the node, its kind and the weight's [N, K] orientation."""
    node: str           # node name (unique; unnamed nodes are named on the way)
    kind: str           # "matmul" | "gather"
    weight: str         # initializer name
    n: int              # output channels (MatMul N / table rows)
    k: int              # reduced dim (MatMul K / embedding width)
    input: str          # activation input (MatMul A) or the indices (Gather)
    tied_to: str | None = None  # a matmul weight equal to a gather table transposed: the gather's target


def find_targets(model: onnx.ModelProto, min_values: int = 4096, base_dir: str = "") -> tuple[list[Target], list[dict]]:
    """The MatMuls with a constant 2-D weight and the Gathers from a constant 2-D table, and why
    others were left alone. Weights may stay on disk (external data under `base_dir`)."""
    inits = {i.name: i for i in model.graph.initializer}
    targets, skipped = [], []
    for idx, node in enumerate(model.graph.node):
        if not node.name:
            node.name = f"{node.op_type}_{idx}"
        if node.op_type == "MatMul" and node.input[1] in inits:
            dims = list(inits[node.input[1]].dims)
            if len(dims) != 2 or dims[0] * dims[1] < min_values:
                continue
            targets.append(Target(node.name, "matmul", node.input[1], dims[1], dims[0], node.input[0]))
        elif node.op_type == "Gather" and node.input[0] in inits:
            dims = list(inits[node.input[0]].dims)
            axis = next((a.i for a in node.attribute if a.name == "axis"), 0)
            if len(dims) != 2 or dims[0] * dims[1] < min_values:
                continue
            if axis != 0:
                skipped.append({"node": node.name, "reason": f"gathers along axis {axis}, not rows"})
                continue
            targets.append(Target(node.name, "gather", node.input[0], dims[0], dims[1], node.input[1]))
    _find_ties(targets, inits, base_dir)
    return targets, skipped


def _find_ties(targets: list[Target], inits: dict, base_dir: str) -> None:
    tables = [t for t in targets if t.kind == "gather"]
    for t in targets:
        if t.kind != "matmul":
            continue
        for table in tables:
            if (table.n, table.k) == (t.n, t.k) and _equal_transposed(inits[t.weight], inits[table.weight], base_dir):
                t.tied_to = table.node


def tensor_view(tensor: onnx.TensorProto, base_dir: str = "") -> np.ndarray:
    """The tensor's values; a read-only memory map when they are raw external data, so a 670 MB
    table is read a chunk at a time, not copied whole."""
    info = {e.key: e.value for e in tensor.external_data}
    dtype = {onnx.TensorProto.FLOAT: np.float32, onnx.TensorProto.FLOAT16: np.float16}.get(tensor.data_type)
    if tensor.data_location == onnx.TensorProto.EXTERNAL and dtype is not None and "location" in info:
        path = os.path.join(base_dir, info["location"])
        return np.memmap(path, dtype=dtype, mode="r", offset=int(info.get("offset", 0)), shape=tuple(tensor.dims))
    return numpy_helper.to_array(tensor, base_dir)


def _equal_transposed(w_kn, e_nk, base_dir: str = "") -> bool:
    w, e = tensor_view(w_kn, base_dir), tensor_view(e_nk, base_dir)
    rows = max(1, (1 << 22) // e.shape[1])
    return all(np.array_equal(w[:, i:i + rows].T, e[i:i + rows]) for i in range(0, e.shape[0], rows))


def weight_nk(model_inits: dict, target: Target, base_dir: str = "") -> np.ndarray:
    """The weight as [N, K] (rows = output channels), the orientation blocks run along. External
    data stays on disk (a memory map, transposed as a view): quantizers read it in row chunks."""
    w = tensor_view(model_inits[target.weight], base_dir)
    if isinstance(w, np.memmap):
        return w.T if target.kind == "matmul" else w
    return np.ascontiguousarray(w.T) if target.kind == "matmul" else w


@dataclass
class Choice:
    bits: int
    block: int
    accuracy_level: int = 4


def rewrite(model: onnx.ModelProto, targets: list[Target], quantized: dict[str, Blocks],
            choices: dict[str, Choice]) -> onnx.ModelProto:
    """A new model: each target in `quantized` replaced by its block-quantized node. Initializers
    of replaced weights are dropped (unless something else still reads them)."""
    out = _without_initializers(model)
    by_node = {t.node: t for t in targets if t.node in quantized}
    tensors: dict[str, list] = {}
    new_nodes = []
    for node in model.graph.node:
        t = by_node.get(node.name)
        if t is None:
            new_nodes.append(node)
            continue
        blocks, choice = quantized[t.node], choices[t.node]
        owner = _owner(t, targets, quantized)
        b, s, z = _tensors(tensors, owner, quantized[owner])
        if t.kind == "matmul":
            new_nodes.append(helper.make_node("MatMulNBits", [t.input, b, s, z], list(node.output), name=node.name,
                                              domain=MS, K=t.k, N=t.n, bits=blocks.bits, block_size=blocks.block,
                                              accuracy_level=choice.accuracy_level))
        else:
            shape_rows, shape_blocks = f"{owner}.rows", f"{owner}.row_blocks"
            if shape_rows not in tensors:
                tensors[shape_rows] = [numpy_helper.from_array(np.array([t.n, -1], np.int64), shape_rows)]
                tensors[shape_blocks] = [numpy_helper.from_array(np.array([t.n, t.k // blocks.block], np.int64), shape_blocks)]
            names = [f"{node.name}.{x}" for x in ("table_rows", "scale_rows", "zero_rows")]
            new_nodes += [helper.make_node("Reshape", [b, shape_rows], [names[0]], name=names[0]),
                          helper.make_node("Reshape", [s, shape_blocks], [names[1]], name=names[1]),
                          helper.make_node("Reshape", [z, shape_rows], [names[2]], name=names[2]),
                          helper.make_node("GatherBlockQuantized", [names[0], t.input, names[1], names[2]], list(node.output),
                                           name=node.name, domain=MS, gather_axis=0, quantize_axis=1,
                                           block_size=blocks.block, bits=blocks.bits)]
    out.graph.node.extend(new_nodes)
    still_read = {i for n in new_nodes for i in n.input}
    out.graph.initializer.extend(i for i in model.graph.initializer if i.name in still_read)
    for group in tensors.values():
        out.graph.initializer.extend(group)
    if not any(o.domain == MS for o in out.opset_import):
        out.opset_import.append(helper.make_opsetid(MS, 1))
    return out


def _owner(t: Target, targets: list[Target], quantized: dict) -> str:
    """Whose quantized table a node reads: a tied pair at the same bits and block shares the
    MatMul's (its rounding minimized the logits' error, GPTQ-style); else its own."""
    if t.kind == "gather":
        head = next((m for m in targets if m.tied_to == t.node and m.node in quantized), None)
        if head is not None and _same(quantized[head.node], quantized[t.node]):
            return head.node
    return t.node


def _same(a: Blocks, b: Blocks) -> bool:
    return a.bits == b.bits and a.block == b.block


def _tensors(tensors: dict, owner: str, blocks: Blocks) -> tuple[str, str, str]:
    names = (f"{owner}.qweight", f"{owner}.scales", f"{owner}.zeros")
    if names[0] not in tensors:
        tensors[names[0]] = [numpy_helper.from_array(blocks.packed(), names[0]),
                             numpy_helper.from_array(blocks.scale.reshape(-1), names[1]),
                             numpy_helper.from_array(blocks.packed_zero(), names[2])]
    return names


def _without_initializers(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of everything but the nodes and initializers (cheap: the weights are most of a model)."""
    out = onnx.ModelProto(ir_version=model.ir_version, producer_name=model.producer_name,
                          producer_version=model.producer_version, domain=model.domain,
                          model_version=model.model_version, doc_string=model.doc_string)
    out.opset_import.extend(model.opset_import)
    out.metadata_props.extend(model.metadata_props)
    g = model.graph
    out.graph.name, out.graph.doc_string = g.name, g.doc_string
    out.graph.input.extend(g.input)
    out.graph.output.extend(g.output)
    out.graph.value_info.extend(g.value_info)
    out.graph.sparse_initializer.extend(g.sparse_initializer)
    return out


__all__ = ["Target", "Choice", "find_targets", "rewrite", "weight_nk"]
