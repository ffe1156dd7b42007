"""FuseAttention on torch's scaled_dot_product_attention pattern, written out: Q and K each scaled,
an additive mask, the IsNaN guard; through the score chain it shares with FuseCachedAttention."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from hewn.core.ir import to_graph
from hewn.core.pass_infra import Context
from hewn.passes.fusion.fuse_attention import FuseAttention
from hewn.targets import CPU
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper

from tests.helpers import check_pass, op_counts

S, N, H = 5, 2, 4
D = N * H


def _attention(mask_rows: int = S, guard_zero: float = 0.0) -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    inits, nodes = [], []

    def const(name, value):
        inits.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def projection(role, perm):
        nodes.extend([h.make_node("MatMul", ["x", const(f"w{role}", rng.standard_normal((D, D)).astype(np.float32))],
                                  [f"{role}_mm"]),
                      h.make_node("Add", [f"{role}_mm", const(f"b{role}", rng.standard_normal(D).astype(np.float32))],
                                  [f"{role}_b"]),
                      h.make_node("Reshape", [f"{role}_b", const(f"shape{role}", np.array([1, S, N, H], np.int64))],
                                  [f"{role}_heads"]),
                      h.make_node("Transpose", [f"{role}_heads"], [role], perm=perm)])

    projection("q", [0, 2, 1, 3])
    projection("k", [0, 2, 3, 1])
    projection("v", [0, 2, 1, 3])
    c = const("c", np.array(H ** -0.25, np.float32))
    nodes += [h.make_node("Mul", ["q", c], ["qs"]), h.make_node("Mul", ["k", c], ["ks"]),
              h.make_node("MatMul", ["qs", "ks"], ["scores"]), h.make_node("Add", ["scores", "mask"], ["masked"]),
              h.make_node("Softmax", ["masked"], ["probs"], axis=-1), h.make_node("IsNaN", ["probs"], ["nan"]),
              h.make_node("Where", ["nan", const("zero", np.array(guard_zero, np.float32)), "probs"], ["guarded"]),
              h.make_node("MatMul", ["guarded", "v"], ["att"]),
              h.make_node("Transpose", ["att"], ["att_t"], perm=[0, 2, 1, 3]),
              h.make_node("Reshape", ["att_t", const("merged", np.array([1, S, D], np.int64))], ["y"])]
    graph = h.make_graph(nodes, "sdpa", [h.make_tensor_value_info("x", T.FLOAT, [1, S, D]),
                                         h.make_tensor_value_info("mask", T.FLOAT, [1, 1, mask_rows, S])],
                         [h.make_tensor_value_info("y", T.FLOAT, [1, S, D])], inits)
    return h.make_model(graph, opset_imports=[h.make_opsetid("", 17)], ir_version=8)


@pytest.mark.parametrize("mask_rows", [S, 1])
def test_sdpa_attention_becomes_multi_head_attention(mask_rows):
    out, result = check_pass(_attention(mask_rows), FuseAttention(), rtol=1e-5, atol=1e-5)
    assert result.stats["attention_blocks"] == 1
    ops = op_counts(out)
    assert ops["MultiHeadAttention"] == 1 and "Softmax" not in ops and "IsNaN" not in ops
    assert ops.get("Expand", 0) == (mask_rows == 1)   # a [1, 1, 1, T] mask is expanded per query
    mha = next(n for n in out.graph.node if n.op_type == "MultiHeadAttention")
    scale = next(a.f for a in mha.attribute if a.name == "scale")
    assert scale == pytest.approx(H ** -0.5)


def test_a_guard_that_is_not_the_nan_guard_is_left_with_the_reason():
    """Where(IsNaN(p), 1, p) is not the guard ORT's kernel reproduces: left unfused."""
    graph = to_graph(_attention(guard_zero=1.0))
    ctx = Context(CPU)
    result = FuseAttention().run(graph, ctx)
    assert not result.modified and result.stats["attention_blocks"] == 0
    assert "IsNaN guard" in ctx.notes[0]["why"], ctx.notes
