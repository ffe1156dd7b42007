"""Causal language models (Hugging Face `*ForCausalLM`) -> one ONNX graph with a KV cache.

The graph serves prefill and decode alike, as ONNX Runtime GenAI and Optimum lay it out:
inputs `input_ids [batch, sequence]`, `attention_mask [batch, past + sequence]`,
`position_ids [batch, sequence]` and `past_key_values.{i}.key|value [batch, kv_heads, past, head_dim]`
(past may be 0); outputs `logits [batch, sequence, vocab]` and `present.{i}.key|value`, the cache
grown by the new tokens. Every dim that varies is dynamic.

The export traces a wrapper that rebuilds a `DynamicCache` from the flat past tensors, so the
model's own cache code runs unchanged (Llama, Qwen, Gemma, GPT-2 families). A plain
`DynamicCache` keeps every position on sliding-window layers too; the model's masks still apply
the window, so results are the same, only the cache holds more than the window needs.
"""
from __future__ import annotations

import copy
import inspect
import os

import torch

from hewn.core.errors import ConfigError, TraceError
from hewn.core.kv_cache import CacheLayout, example_feeds
from hewn.frontends.torch_export import quiet

EXTERNAL_BYTES = 256 << 20  # larger models keep their weights in one .data file beside the graph
TRACE_PAST, TRACE_SEQUENCE = 3, 5  # example sizes: a non-empty past and more than one new token


def cache_argument(module) -> str | None:
    """The name forward() takes the KV cache under: `cache` (transformers >= 5.2) or
    `past_key_values` (older); None when it takes neither."""
    params = inspect.signature(module.forward).parameters
    return next((n for n in ("cache", "past_key_values") if n in params), None)


def is_causal_lm(module) -> bool:
    """A Hugging Face causal LM: has a config and generate(), and forward() takes a KV cache."""
    if not isinstance(module, torch.nn.Module) or not hasattr(module, "config") or not hasattr(module, "generate"):
        return False
    name = type(module).__name__
    return cache_argument(module) is not None and (name.endswith("ForCausalLM") or name.endswith("LMHeadModel"))


def layout_of(model) -> CacheLayout:
    cfg = model.config
    cfg = getattr(cfg, "text_config", None) or cfg
    heads = cfg.num_attention_heads
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // heads
    kv_heads = getattr(cfg, "num_key_value_heads", None) or heads
    return CacheLayout(cfg.num_hidden_layers, kv_heads, head_dim, cfg.vocab_size)


class _WithCache(torch.nn.Module):
    """forward(input_ids, attention_mask, position_ids, *flat_past) -> (logits, *flat_present)."""

    def __init__(self, lm, layers: int):
        super().__init__()
        self.lm, self.layers, self.cache_arg = lm, layers, cache_argument(lm)

    def forward(self, input_ids, attention_mask, position_ids, *past):
        from transformers import DynamicCache
        cache = DynamicCache()
        for i in range(self.layers):
            cache.update(past[2 * i], past[2 * i + 1], i)
        out = self.lm(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                      use_cache=True, return_dict=True, **{self.cache_arg: cache})
        grown = out.get("past_key_values", None) or out.get("cache", None)
        present = []
        for layer in grown.layers:
            present += [layer.keys, layer.values]
        return (out.logits, *present)


def export_causal_lm(model, path: str, opset: int = 17) -> CacheLayout:
    """Export `model` with its KV cache to `path` (weights in `path`.data beside it over 256 MB).
    A private eval copy is traced; the user's model is untouched."""
    if not is_causal_lm(model):
        raise ConfigError(f"{type(model).__name__} is not a Hugging Face causal LM (a *ForCausalLM whose "
                          f"forward() takes a KV cache)")
    lm = copy.deepcopy(model).eval()
    layout = layout_of(lm)
    wrapper = _WithCache(lm, layout.layers)
    feeds = example_feeds(layout, 1, TRACE_PAST, TRACE_SEQUENCE)
    args = tuple(torch.from_numpy(feeds[n]) for n in feeds)
    inputs = list(feeds)
    outputs = ["logits", *layout.present_names]
    dims = {"input_ids": {0: "batch", 1: "sequence"}, "attention_mask": {0: "batch", 1: "total_sequence"},
            "position_ids": {0: "batch", 1: "sequence"}, "logits": {0: "batch", 1: "sequence"}}
    dims.update({n: {0: "batch", 2: "past_sequence"} for n in layout.past_names})
    dims.update({n: {0: "batch", 2: "total_sequence"} for n in layout.present_names})
    weight_bytes = sum(p.numel() * p.element_size() for p in lm.parameters())
    big = weight_bytes > 1.8e9
    try:
        with torch.no_grad(), quiet():
            torch.onnx.export(wrapper, args, path, input_names=inputs, output_names=outputs, dynamic_axes=dims,
                              opset_version=opset, dynamo=False, external_data=big)
    except Exception as exc:  # noqa: BLE001 - one line naming the model and the exporter's reason
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise TraceError(f"cannot export {type(model).__name__} with a KV cache: {first}") from None
    if not big and weight_bytes > EXTERNAL_BYTES:  # weights beside the graph: compression streams them one by one
        import onnx
        exported = onnx.load(path)
        onnx.save(exported, path, save_as_external_data=True, all_tensors_to_one_file=True,
                  location=os.path.basename(path) + ".data", size_threshold=1024)
    return layout


def load(model, folder: str):
    """The KV-cache export of `model` into `folder` (a private temporary folder) as the ONNX
    side's Source (causal_lm_check.load_checked also checks it against transformers)."""
    from hewn.frontends import kv_cache_onnx

    path = os.path.join(folder, "float.onnx")
    export_causal_lm(model, path)
    source = kv_cache_onnx.load(path)   # (its path, in hewn's private folder, is protected like an input's)
    source.info.update(source=type(model).__name__, exporter="torch.onnx.export (TorchScript) with a DynamicCache "
                       "rebuilt from flat past tensors")
    return source


__all__ = ["is_causal_lm", "layout_of", "export_causal_lm", "load"]
