"""Decoder attention fusion: lossless against the unfused export (and transformers) on the tiny
families, and dropped when it would change the outputs."""
from __future__ import annotations

import collections
from pathlib import Path

import numpy as np
import onnx
import pytest
from hewn.core.runtime import file_session
from hewn.frontends.causal_lm import export_causal_lm
from hewn.passes.fusion import fuse_decoder as fuse_mod
from hewn.core.kv_cache import Decoder
from hewn.passes.fusion.fuse_decoder import fuse_decoder
from hewn.frontends.causal_lm_check import check_generation, check_logits

from tests.llm.tiny import tiny_lm


def _sabotage(monkeypatch, name, op_type, mutate):
    """Make FUSIONS' `name` rewrite emit a wrong graph: mutate(node) on each `op_type` node it made."""
    def wrong(model):
        out, report = real(model)
        for node in out.graph.node:
            if node.op_type == op_type:
                mutate(node)
        return out, report

    real = next(f for n, f, _ in fuse_mod.FUSIONS if n == name)
    monkeypatch.setattr(fuse_mod, "FUSIONS", tuple((n, wrong if n == name else f, into)
                                                   for n, f, into in fuse_mod.FUSIONS))


def _ops(model: onnx.ModelProto) -> collections.Counter:
    return collections.Counter(n.op_type for n in model.graph.node)


@pytest.mark.parametrize("family,grouped", [("llama", True), ("gemma3", True), ("qwen2", True), ("gpt2", False)])
def test_attention_fused_and_lossless(tmp_path, family, grouped):
    model = tiny_lm(family)
    path = tmp_path / "lm.onnx"
    layout = export_causal_lm(model, str(path))
    before = onnx.load(path)
    fused, report = fuse_decoder(before, str(tmp_path), layout)
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
    assert all(c["max_rel_error"] <= fuse_mod.TOLERANCE for c in att["checks"])
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
    from hewn.passes.fusion.fuse_cached_attention import fuse_cached_attention
    layout = export_causal_lm(tiny_lm(family), str(tmp_path / "lm.onnx"))
    fused, report = fuse_cached_attention(onnx.load(tmp_path / "lm.onnx"))
    assert report["fused"] == report["shapes_reread"] == layout.layers
    readers = {n.op_type for n in fused.graph.node for i in n.input if i.startswith("present.")}
    assert readers == {"Attention"}, readers


@pytest.mark.parametrize("family", ["gemma3", "gpt2"])
def test_a_second_run_changes_nothing(tmp_path, family):
    """Every rewrite on an already fused graph finds nothing to do and leaves it byte for byte."""
    layout = export_causal_lm(tiny_lm(family), str(tmp_path / "lm.onnx"))
    once, _ = fuse_decoder(onnx.load(tmp_path / "lm.onnx"), str(tmp_path), layout)
    twice, report = fuse_decoder(onnx.ModelProto.FromString(once.SerializeToString()), str(tmp_path), layout)
    assert all(rep["fused"] == 0 and not rep.get("dropped") for rep in report.values()), report
    assert twice.SerializeToString() == once.SerializeToString()


def test_left_padded_batch_matches(tmp_path):
    """A left-padded row goes through the bool mask the fused node reads; its logits must match."""
    model = tiny_lm("llama")
    path = tmp_path / "lm.onnx"
    layout = export_causal_lm(model, str(path))
    fused, _ = fuse_decoder(onnx.load(path), str(tmp_path), layout)
    onnx.save(fused, tmp_path / "fused.onnx")
    a, b = Decoder(file_session(str(path)), layout), Decoder(file_session(str(tmp_path / "fused.onnx")), layout)
    ids = np.array([[7, 8, 9, 10, 11, 12], [0, 0, 30, 31, 32, 33]])
    feeds_mask = np.array([[1] * 6, [0, 0, 1, 1, 1, 1]])
    from hewn.core.kv_cache import cache_feeds
    feeds = cache_feeds(ids, layout.empty_past(2), 0)
    feeds["attention_mask"] = feeds_mask.astype(np.int64)
    ref, got = a.session.run(["logits"], feeds)[0], b.session.run(["logits"], feeds)[0]
    assert np.isfinite(got).all()
    np.testing.assert_allclose(got[:, 2:], ref[:, 2:], rtol=1e-4, atol=1e-4 * np.abs(ref).max())


def test_a_wrong_fusion_is_dropped(tmp_path, monkeypatch):
    """The verification is what stands between a bad rewrite and the user: a fusion with the wrong
    scale must come back unfused, with the reason."""
    model = tiny_lm("llama")
    path = tmp_path / "lm.onnx"
    layout = export_causal_lm(model, str(path))

    def wrong_scale(node):
        for a in node.attribute:
            if a.name == "scale":
                a.f *= 1.5

    _sabotage(monkeypatch, "attention", "Attention", wrong_scale)
    before = onnx.load(path)
    fused, report = fuse_decoder(before, str(tmp_path), layout)
    assert report["attention"]["fused"] == 0 and "differ" in report["attention"]["dropped"]
    assert _ops(fused)["Attention"] == 0 and _ops(fused)["Softmax"] == layout.layers
    assert report["rotary"]["fused"] == 2 * layout.layers      # the other fusion stands on its own check


def test_a_wrong_rotary_fusion_is_dropped(tmp_path, monkeypatch):
    """cos and sin handed over the wrong way round must fail the check and stay unfused, while
    the attention fusion before it stands."""
    model = tiny_lm("llama")
    path = tmp_path / "lm.onnx"
    layout = export_causal_lm(model, str(path))

    def cos_for_sin(node):
        node.input[1], node.input[2] = node.input[2], node.input[1]

    _sabotage(monkeypatch, "rotary", "RotaryEmbedding", cos_for_sin)
    fused, report = fuse_decoder(onnx.load(path), str(tmp_path), layout)
    assert report["rotary"]["fused"] == 0 and report["rotary"]["dropped"], report["rotary"]
    assert _ops(fused)["RotaryEmbedding"] == 0 and _ops(fused)["Attention"] == layout.layers


def test_a_rewrite_that_raises_leaves_the_graph_as_it_was(tmp_path, monkeypatch):
    """A rewrite that fails to build (onnx's version converter raising on an op it cannot convert)
    is reported as dropped; compile goes on with the other rewrites instead of failing."""
    from hewn.passes.fusion import proto_index
    model = tiny_lm("llama")
    path = tmp_path / "lm.onnx"
    layout = export_causal_lm(model, str(path))

    def refuse(model, opset, where="model"):
        raise RuntimeError("version converter: no adapter for Foo")

    monkeypatch.setattr(proto_index, "upgrade_model", refuse)
    before = onnx.load(path)
    fused, report = fuse_decoder(before, str(tmp_path), layout)
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
    fused, report = fuse_decoder(onnx.load(path), str(tmp_path), layout)
    att = report["attention"]
    assert att["fused"] == 0 and len(att["left"]) == layout.layers
    assert "soft-capped" in att["left"][0]["reason"]
    assert Path(path).exists() and _ops(fused)["Attention"] == 0
