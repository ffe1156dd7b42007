"""SVDSplit on ONNX graphs: full rank reproduces the node, error shrinks as rank grows, only
cheaper splits happen, a split node is never split again."""
from __future__ import annotations

import numpy as np
import pytest

from hewn.core.errors import ConfigError
from hewn.core.ir import to_graph, to_model
from hewn.core.pass_infra import Context
from hewn.core.runtime import input_specs, seeded_inputs
from hewn.passes.lowrank.factor import SVDConfig, energy_rank
from hewn.passes.lowrank.svd_split import SVDSplit
from hewn.targets import CPU

from tests.helpers import check_pass, op_counts, ort_outputs, parse

def _floats(name, shape):
    rng = np.random.default_rng(sum(map(ord, name)) * 1000 + int(np.prod(shape)))  # same weights every call
    values = ", ".join(f"{v:.6f}" for v in rng.standard_normal(int(np.prod(shape))).ravel() * 0.2)
    return f"float[{','.join(map(str, shape))}] {name} = {{{values}}}"


def dense_model(n=48, m=40):
    """MatMul(W), Gemm(transB=0, bias) and Gemm(transB=1): three weight layouts."""
    return parse(f"""
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[2, {n}] x) => (float[2, {m}] y)
        <{_floats('w1', (n, m))}, {_floats('w2', (m, n))}, {_floats('b2', (n,))}, {_floats('w3', (m, n))}>
        {{
            h = MatMul(x, w1)
            r = Relu(h)
            g2 = Gemm<alpha: float = 0.5, beta: float = 2.0>(r, w2, b2)
            y = Gemm<transB: int = 1>(g2, w3)
        }}""")


def conv_model():
    return parse(f"""
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[1, 8, 10, 10] x) => (float[1, 24, 5, 5] y)
        <{_floats('w', (24, 8, 3, 3))}, {_floats('b', (24,))}>
        {{
            y = Conv<strides: ints = [2, 2], pads: ints = [1, 1, 1, 1]>(x, w, b)
        }}""")


@pytest.mark.parametrize("make", [dense_model, conv_model])
def test_full_rank_reproduces_outputs(make):
    model = make()
    out, result = check_pass(model, SVDSplit(SVDConfig(rank=1.0, margin=10.0, round_to=1, min_params=1)),
                             rtol=1e-5, atol=1e-5)
    assert all(r["rank"] == r["full_rank"] and r["weight_rel_error"] < 1e-6 for r in result.stats["layers"])
    assert len(result.stats["layers"]) == (3 if make is dense_model else 1)


def _error_at(model, rank):
    feeds = seeded_inputs(input_specs(model), 2, seed=0)
    ref = ort_outputs(model, feeds)
    graph = to_graph(model)
    SVDSplit(SVDConfig(rank=rank, margin=10.0, round_to=1, min_params=1)).run(graph, Context(CPU))
    got = ort_outputs(to_model(graph, ir_version=8), feeds)
    return float(np.mean([np.linalg.norm(g[0] - r[0]) / np.linalg.norm(r[0]) for g, r in zip(got, ref)]))


@pytest.mark.parametrize("make", [dense_model, conv_model])
def test_error_decreases_monotonically_with_rank(make):
    errors = [_error_at(make(), k) for k in (1, 2, 4, 8, 16, 24)]
    assert all(a >= b - 1e-7 for a, b in zip(errors, errors[1:])), errors
    assert errors[0] > 0.1 and errors[-1] < errors[0] / 2


def test_only_cheaper_splits_happen():
    model = dense_model(n=48, m=40)  # break-even rank 48*40/88 = 21.8
    graph = to_graph(model)
    result = SVDSplit(SVDConfig(rank=24, round_to=1, min_params=1)).run(graph, Context(CPU))
    assert not result.modified
    assert all("not cheaper" in s["why"] for s in result.stats["skipped"])
    graph = to_graph(model)
    result = SVDSplit(SVDConfig(rank=8, round_to=1, min_params=1)).run(graph, Context(CPU))
    assert result.modified and all(r["macs_after"] < r["macs_before"] for r in result.stats["layers"])
    assert op_counts(to_model(graph, ir_version=8)).get("Gemm", 0) == 4 and op_counts(to_model(graph, ir_version=8))["MatMul"] == 2
    again = SVDSplit(SVDConfig(rank=8, round_to=1, min_params=1)).run(graph, Context(CPU))
    assert not again.modified


def test_energy_rank_and_bad_config():
    s = np.array([4.0, 2.0, 1.0, 1.0])  # energies 16, 4, 1, 1 of 22
    assert energy_rank(s, 0.7) == 1 and energy_rank(s, 0.9) == 2 and energy_rank(s, 1.0) == 4
    with pytest.raises(ConfigError, match="share of the full rank"):
        SVDConfig(rank=1.5)
    with pytest.raises(ConfigError, match="energy"):
        SVDConfig(energy=0)


def test_grouped_conv_is_left_intact_with_a_reason():
    model = parse(f"""
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[1, 8, 6, 6] x) => (float[1, 8, 6, 6] y)
        <{_floats('w', (8, 1, 3, 3))}>
        {{ y = Conv<group: int = 8, pads: ints = [1, 1, 1, 1]>(x, w) }}""")
    graph = to_graph(model)
    ctx = Context(CPU)
    result = SVDSplit(SVDConfig(rank=1, min_params=1)).run(graph, ctx)
    assert not result.modified
    assert any("depthwise" in n["why"] for n in ctx.notes)
