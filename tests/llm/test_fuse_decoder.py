"""Decoder fusions on the compile route (the target's `decoder` slot, checked by the pass
manager): lossless against the unfused export (and transformers) on the tiny families, and
rolled back with the reason when one would change the outputs."""
from __future__ import annotations

import collections
from pathlib import Path

import numpy as np
import onnx
import pytest

import hewn
from hewn.core.kv_cache import Decoder, cache_feeds
from hewn.core.runtime import file_session
from hewn.frontends.causal_lm import export_causal_lm
from hewn.frontends.causal_lm_check import check_generation, check_logits
from hewn.targets import CPU

from tests.llm.tiny import tiny_lm


def _fuse(path, vocab=256) -> tuple[onnx.ModelProto, dict, dict]:
    """The model after the cpu target's decoder passes (compile's route), report["fusions"], the report."""
    rng = np.random.default_rng(0)
    result = hewn.compile(str(path), "cpu", calib_data=[rng.integers(0, vocab, 64)], passes=list(CPU.decoder),
                          measure_latency=False)
    return result.onnx, result.report["fusions"], result.report


def _sabotage(monkeypatch, cls, op_type, mutate):
    """Make pass `cls` emit a wrong graph: mutate(node) on each `op_type` node it made. (Without the
    suite's per-pass Verify instrument, which raises on it: the manager's own check is under test.)"""
    monkeypatch.delenv("HEWN_VERIFY_EACH_PASS", raising=False)
    real = cls.run

    def wrong(self, graph, ctx):
        result = real(self, graph, ctx)
        for node in graph.nodes:
            if node.op == op_type:
                mutate(node)
        return result
    monkeypatch.setattr(cls, "run", wrong)


def _ops(model: onnx.ModelProto) -> collections.Counter:
    return collections.Counter(n.op_type for n in model.graph.node)


@pytest.mark.parametrize("family,grouped", [("llama", True), ("gemma3", True), ("qwen2", True), ("gpt2", False)])
def test_attention_fused_and_lossless(tmp_path, family, grouped):
    model = tiny_lm(family)
    path = tmp_path / "lm.onnx"
    layout = export_causal_lm(model, str(path))
    before = onnx.load(path)
    fused, report, full = _fuse(path)
    att = report["attention"]
    assert att["fused"] == layout.layers and not att.get("dropped"), att
    assert att["grouped_kv"] == (layout.layers if grouped else 0)
    ops = _ops(fused)
    assert ops["Attention"] == layout.layers and ops["Softmax"] == 0
    assert sum(ops.values()) < sum(_ops(before).values())
    # repeat_kv is gone entirely: the cache is read by the Attention nodes alone
    readers = {n.op_type for n in fused.graph.node for i in n.input if i.startswith("present.")}
    assert readers == {"Attention"} or not grouped, readers
    assert report["reshape"]["fused"] >= 3 * layout.layers and not report["reshape"].get("dropped")
    assert all(i in {n.output[0] for n in fused.graph.node if n.op_type == "Constant"}
               for n in fused.graph.node if n.op_type == "Reshape" and "layers" in n.name for i in n.input[1:])
    v = full["verification"]          # lossless: the outputs at the 4 decoder sizes within the target's tolerance
    assert v["samples"] == 4 and v["max_rel_err"] <= CPU.verify_rtol and not any(r.get("rolled_back") for r in full["passes"])
    rot = report["rotary"]
    rotary = family != "gpt2"        # GPT-2 has learned positions, no rotary
    assert rot["fused"] == (2 * layout.layers if rotary else 0) and not rot.get("dropped"), rot
    assert ops["RotaryEmbedding"] == rot["fused"] and (ops["Neg"] == 0 or not rotary)
    tanh_gelu = family in ("gemma3", "gpt2")        # gelu_pytorch_tanh / gelu_new; llama and qwen2 use SiLU
    assert report["gelu"]["fused"] == (layout.layers if tanh_gelu else 0) and ops["Tanh"] == 0
    assert ops["Gelu"] == report["gelu"]["fused"]
    out = tmp_path / "fused.onnx"
    onnx.save(fused, out)
    session = file_session(str(out))
    check_logits(model, session, layout)          # raises past float tolerance against transformers
    prompts = [np.array([5, 17, 99, 3, 250]), np.array([1, 2, 3])]
    assert check_generation(model, session, layout, prompts, new_tokens=20)["equal"]   # gemma3: past its window of 8


@pytest.mark.parametrize("family", ["llama", "gemma3"])
def test_attention_alone_frees_repeat_kv(tmp_path, family):
    """Without constant reshape targets the output reshape reads its sizes off repeat_kv's result;
    the fusion reads them off the query so that the chain still goes."""
    from hewn.passes.fusion.fuse_cached_attention import FuseCachedAttention
    from tests.helpers import run_pass
    layout = export_causal_lm(tiny_lm(family), str(tmp_path / "lm.onnx"))
    fused, report = run_pass(FuseCachedAttention(), onnx.load(tmp_path / "lm.onnx"))
    assert report["fused"] == report["shapes_reread"] == layout.layers
    readers = {n.op_type for n in fused.graph.node for i in n.input if i.startswith("present.")}
    assert readers == {"Attention"}, readers


@pytest.mark.parametrize("family", ["gemma3", "gpt2"])
def test_a_second_run_changes_nothing(tmp_path, family):
    """Every rewrite on an already fused graph finds nothing to do and leaves its graph as it was."""
    export_causal_lm(tiny_lm(family), str(tmp_path / "lm.onnx"))
    once, _, _ = _fuse(tmp_path / "lm.onnx")
    onnx.save(once, tmp_path / "once.onnx")
    twice, report, full = _fuse(tmp_path / "once.onnx")
    assert all(rep["fused"] == 0 and not rep.get("dropped") for rep in report.values()), report
    assert not any(r["modified"] for r in full["passes"])
    for model in (once, twice):   # (the first compile stamped its new nodes with the pass that made them)
        for node in model.graph.node:
            del node.metadata_props[:]
    nodes = [sorted(n.SerializeToString() for n in m.graph.node) for m in (once, twice)]
    assert nodes[0] == nodes[1]                                   # the same nodes (compile re-sorts them)
    assert [i.SerializeToString() for i in once.graph.initializer] == [i.SerializeToString() for i in twice.graph.initializer]


def test_left_padded_batch_matches(tmp_path):
    """A left-padded row goes through the bool mask the fused node reads; its logits must match."""
    model = tiny_lm("llama")
    path = tmp_path / "lm.onnx"
    layout = export_causal_lm(model, str(path))
    fused, _, _ = _fuse(path)
    onnx.save(fused, tmp_path / "fused.onnx")
    a, b = Decoder(file_session(str(path)), layout), Decoder(file_session(str(tmp_path / "fused.onnx")), layout)
    ids = np.array([[7, 8, 9, 10, 11, 12], [0, 0, 30, 31, 32, 33]])
    feeds_mask = np.array([[1] * 6, [0, 0, 1, 1, 1, 1]])
    feeds = cache_feeds(ids, layout.empty_past(2), 0)
    feeds["attention_mask"] = feeds_mask.astype(np.int64)
    ref, got = a.session.run(["logits"], feeds)[0], b.session.run(["logits"], feeds)[0]
    assert np.isfinite(got).all()
    np.testing.assert_allclose(got[:, 2:], ref[:, 2:], rtol=1e-4, atol=1e-4 * np.abs(ref).max())


def test_a_wrong_fusion_is_rolled_back(tmp_path, monkeypatch):
    """The manager's check is what stands between a bad rewrite and the user: a fusion with the
    wrong scale must come back unfused, with the reason, while the others stand."""
    from hewn.passes.fusion.fuse_cached_attention import FuseCachedAttention
    path = tmp_path / "lm.onnx"
    layout = export_causal_lm(tiny_lm("llama"), str(path))

    def wrong_scale(node):
        node.attrs["scale"] *= 1.5

    _sabotage(monkeypatch, FuseCachedAttention, "Attention", wrong_scale)
    fused, report, full = _fuse(path)
    assert report["attention"]["fused"] == 0 and "changed the outputs" in report["attention"]["dropped"]
    assert _ops(fused)["Attention"] == 0 and _ops(fused)["Softmax"] == layout.layers
    assert report["rotary"]["fused"] == 2 * layout.layers      # the other fusions stand on their own checks
    assert any(n["pass"] == "fuse_cached_attention" and "rolled back" in n["why"] for n in full["left_intact"])


def test_a_wrong_rotary_fusion_is_rolled_back(tmp_path, monkeypatch):
    """cos and sin handed over the wrong way round must fail the check and stay unfused, while
    the attention fusion before it stands."""
    from hewn.passes.fusion.fuse_rotary import FuseRotary
    path = tmp_path / "lm.onnx"
    layout = export_causal_lm(tiny_lm("llama"), str(path))

    def cos_for_sin(node):
        node.inputs[1], node.inputs[2] = node.inputs[2], node.inputs[1]

    _sabotage(monkeypatch, FuseRotary, "RotaryEmbedding", cos_for_sin)
    fused, report, _ = _fuse(path)
    assert report["rotary"]["fused"] == 0 and report["rotary"]["dropped"], report["rotary"]
    assert _ops(fused)["RotaryEmbedding"] == 0 and _ops(fused)["Attention"] == layout.layers


def test_a_fusion_that_cannot_be_built_leaves_the_graph_as_it_was(tmp_path, monkeypatch):
    """A rewrite that fails to build (onnx's version converter raising on an op it cannot convert)
    is reported as dropped; the compile goes on with the other rewrites instead of failing."""
    from hewn.passes.fusion import match
    path = tmp_path / "lm.onnx"
    layout = export_causal_lm(tiny_lm("llama"), str(path))

    def refuse(model, opset, where="model"):
        raise RuntimeError("version converter: no adapter for Foo")

    monkeypatch.setattr(match, "upgrade_model", refuse)
    fused, report, _ = _fuse(path)
    assert report["reshape"]["fused"] > 0                      # opset 17 is enough for constant targets
    for name in ("attention", "rotary"):
        assert report[name]["fused"] == 0 and "no adapter for Foo" in report[name]["dropped"], report[name]
    assert _ops(fused)["Attention"] == 0 and _ops(fused)["Softmax"] == layout.layers


def test_softcapped_scores_are_left_with_the_reason(tmp_path):
    """A score that is transformed between the MatMul and the Softmax (Gemma-2's soft cap) is not
    fused; the report names why."""
    import torch
    import transformers as tf
    torch.manual_seed(0)
    model = tf.Gemma2ForCausalLM(tf.Gemma2Config(vocab_size=256, hidden_size=64, num_hidden_layers=2,
                                                 num_attention_heads=4, num_key_value_heads=2, head_dim=16,
                                                 intermediate_size=128, attn_logit_softcapping=50.0,
                                                 sliding_window=8)).eval()
    path = tmp_path / "lm.onnx"
    layout = export_causal_lm(model, str(path))
    fused, report, _ = _fuse(path)
    att = report["attention"]
    assert att["fused"] == 0 and len(att["left"]) == layout.layers
    assert "soft-capped" in att["left"][0]["reason"]
    assert Path(path).exists() and _ops(fused)["Attention"] == 0
