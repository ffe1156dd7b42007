"""Tiny randomly initialised causal LMs of the families hewn exports (seconds to build and run)."""
from __future__ import annotations

import torch


def tiny_lm(family: str, seed: int = 0):
    import transformers as tf
    torch.manual_seed(seed)
    common = dict(vocab_size=384, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                  intermediate_size=128, max_position_embeddings=256)
    if family == "llama":
        model = tf.LlamaForCausalLM(tf.LlamaConfig(num_key_value_heads=2, **common))
    elif family == "gemma3":
        model = tf.Gemma3ForCausalLM(tf.Gemma3TextConfig(num_key_value_heads=1, head_dim=32, sliding_window=8,
                                                         layer_types=["sliding_attention", "full_attention"], **common))
    elif family == "qwen2":
        model = tf.Qwen2ForCausalLM(tf.Qwen2Config(num_key_value_heads=2, **common))
    elif family == "gpt2":
        model = tf.GPT2LMHeadModel(tf.GPT2Config(vocab_size=384, n_embd=64, n_layer=2, n_head=4, n_positions=256))
    else:
        raise ValueError(family)
    return model.eval()
