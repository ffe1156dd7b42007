"""Decoder structure candidates: layer influence finds the layer that does nothing, a depth-pruned
model exports and runs with its smaller cache exactly as torch runs it, distillation lowers the KL."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from hewn.core.errors import ConfigError
from hewn.core.runtime import file_session
from hewn.frontends.causal_lm import export_causal_lm
from hewn.passes.distill.logits import distill_logits
from hewn.passes.prune.drop_layers import drop_layers, layer_influence
from hewn.frontends.causal_lm_check import check_generation, check_logits

from tests.llm.tiny import tiny_lm


def _windows(n=3, size=48):
    rng = np.random.default_rng(1)
    return [rng.integers(0, 384, size) for _ in range(n)]


def _three_layer_llama():
    import transformers as tf
    torch.manual_seed(0)
    return tf.LlamaForCausalLM(tf.LlamaConfig(vocab_size=384, hidden_size=64, num_hidden_layers=3, num_attention_heads=4,
                                              num_key_value_heads=2, intermediate_size=128)).eval()


def test_a_layer_that_adds_nothing_has_the_least_influence():
    model = _three_layer_llama()
    with torch.no_grad():   # layer 1 writes nothing into the residual stream: its output is its input
        model.model.layers[1].self_attn.o_proj.weight.zero_()
        model.model.layers[1].mlp.down_proj.weight.zero_()
    influence = layer_influence(model, _windows())
    assert len(influence) == 3 and influence[1] < 1e-6 < min(influence[0], influence[2])


@pytest.mark.parametrize("family", ["gemma3", "llama", "gpt2"])
def test_depth_pruned_model_exports_and_matches_torch(tmp_path, family):
    model = tiny_lm(family)
    pruned = drop_layers(model, [0])
    assert len(pruned.config.layer_types if getattr(pruned.config, "layer_types", None) else [0]) == 1
    path = tmp_path / "p.onnx"
    layout = export_causal_lm(pruned, str(path))
    assert layout.layers == 1
    session = file_session(str(path))
    check_logits(pruned, session, layout)
    assert check_generation(pruned, session, layout, [np.array([4, 9, 16, 25])], new_tokens=12)["equal"]
    # the user's model keeps its layers; the pruned one differs from it
    ids = torch.tensor([[4, 9, 16, 25]])
    with torch.no_grad():
        assert not torch.allclose(model(input_ids=ids).logits, pruned(input_ids=ids).logits)
    assert sum(1 for _ in model.modules()) > sum(1 for _ in pruned.modules())


def test_bad_layer_indices_are_refused():
    model = tiny_lm("llama")
    for drop in ([], [2], [0, 1], [-1]):
        with pytest.raises(ConfigError, match="cannot drop layers"):
            drop_layers(model, drop)


def _kl(teacher, student, ids) -> float:
    with torch.no_grad():
        t = torch.log_softmax(teacher(input_ids=ids).logits, -1)
        s = torch.log_softmax(student(input_ids=ids).logits, -1)
    return float(torch.nn.functional.kl_div(s, t, log_target=True, reduction="sum") / ids.numel())


def test_distillation_lowers_the_kl_and_leaves_embeddings_alone():
    teacher = _three_layer_llama()
    student = drop_layers(teacher, [1])
    windows = _windows(4, 64)
    ids = torch.as_tensor(np.concatenate(windows)[None, :128])
    before = _kl(teacher, student, ids)
    embed = student.get_input_embeddings().weight.detach().clone()
    result = distill_logits(student, teacher, windows, steps=30, lr=1e-3, tokens=64)
    after = _kl(teacher, student, ids)
    assert after < 0.7 * before, (before, after, result)
    assert torch.equal(student.get_input_embeddings().weight, embed)
    assert not any(p.requires_grad for p in student.parameters()) and not student.training
