"""Shared test helpers: run one pass on a model and check it the way STYLE.md asks."""
from __future__ import annotations

import hashlib

import numpy as np
import onnx

from hewn.core.ir import to_graph, to_model
from hewn.core.pass_infra import Context
from hewn.core.runtime import input_specs, make_session, run_all, seeded_inputs
from hewn.targets import CPU


# Identity -> Relu -> Identity -> Sigmoid: work for remove_identity, and a graph to break
IDENTITY_CHAIN = """
<ir_version: 8, opset_import: ["" : 13]>
g (float[2, 4] x) => (float[2, 4] y) {
    a = Identity(x)
    b = Relu(a)
    c = Identity(b)
    y = Sigmoid(c)
}"""


def file_digest(path) -> str:
    """sha256 of a file, streamed (the 2.4 GB model too): "the input is untouched" checks."""
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def parse(text: str) -> onnx.ModelProto:
    model = onnx.parser.parse_model(text)
    onnx.checker.check_model(model)
    return model


def ort_outputs(model: onnx.ModelProto, feeds):
    return run_all(make_session(model, optimize=False), feeds)


def check_pass(model: onnx.ModelProto, pass_, *, rtol=1e-5, atol=1e-6, expect_modified=True, feeds=None):
    """Run `pass_` on `model`: assert `modified`, onnx.checker, equal outputs in ORT (optimizations off,
    so ORT's own rewrites cannot hide a bug), and that a second run reports modified=False."""
    feeds = feeds or seeded_inputs(input_specs(model), 2, seed=0)
    reference = ort_outputs(model, feeds)
    graph = to_graph(model)
    result = pass_.run(graph, Context(CPU, ir_version=max(model.ir_version, 7)))
    assert result.modified == expect_modified, result.stats
    out = to_model(graph, ir_version=max(model.ir_version, 7))
    onnx.checker.check_model(out, full_check=True)
    for ref, got in zip(reference, ort_outputs(out, feeds)):
        for r, g in zip(ref, got):
            np.testing.assert_allclose(g, r, rtol=rtol, atol=atol)
    again = pass_.run(graph, Context(CPU, ir_version=max(model.ir_version, 7)))
    assert not again.modified, f"second run modified the graph again: {again.stats}"
    return out, result


def op_counts(model: onnx.ModelProto) -> dict[str, int]:
    counts: dict[str, int] = {}
    for node in model.graph.node:
        counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return counts


def masked_onnx(model: onnx.ModelProto, analysis, groups) -> onnx.ModelProto:
    """The original model with the chosen groups zeroed where sinks (weighted readers) read them:
    what physically removing those channels must reproduce. Independent of the surgery."""
    graph = to_graph(model)
    tensors = graph.tensors()
    removed = analysis.removed_elements(groups)
    zeroed = 0
    for e in analysis.edits:
        mask = removed.get(analysis.index[e.space])
        if e.role != "sink" or mask is None or not mask[e.elems].any():
            continue
        values = np.array(tensors[e.param].values).copy()
        index = [slice(None)] * values.ndim
        index[e.axis] = np.asarray(e.index)[mask[e.elems]]
        values[tuple(index)] = 0
        tensors[e.param].values = values
        zeroed += 1
    assert zeroed, "the plan removes channels no weighted op reads"
    return to_model(graph, ir_version=max(model.ir_version, 7))


def prune(model: onnx.ModelProto, config):
    """PruneChannels alone on `model`: (the pruned model, the PassResult)."""
    from hewn.passes import PruneChannels

    graph = to_graph(model)
    result = PruneChannels(config).run(graph, Context(CPU))
    return to_model(graph, ir_version=max(model.ir_version, 7)), result


def run_pass(pass_, model: onnx.ModelProto) -> tuple[onnx.ModelProto, dict]:
    """`model` after `pass_` on its graph (weights on disk stay there), and the pass's stats;
    `model` itself when the pass changed nothing."""
    from hewn.core.ir import keep_interface, to_graph, to_model
    from hewn.core.pass_infra import Context

    graph = to_graph(model)
    result = pass_.run(graph, Context(None, ir_version=max(model.ir_version, 7)))
    if not result.modified:
        return model, dict(result.stats)
    return keep_interface(to_model(graph, ir_version=model.ir_version), model), dict(result.stats)
