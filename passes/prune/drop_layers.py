"""Depth pruning of torch causal LMs: whole decoder layers ranked by how little each changes its
input, and removed (logit distillation to win accuracy back is passes/distill/logits.py).

Depth: a layer whose output is nearly its input (cosine similarity of the hidden state before and
after it, over calibration tokens: ShortGPT's "block influence") contributes least; dropping it
removes its weights, its KV cache and its share of every step. Distillation then trains the
remaining layers (embeddings frozen: they are 63% of a small model's weights and the lm_head is
tied to them) to match the unpruned model's next-token distributions on the calibration text.
"""
from __future__ import annotations

import copy

import numpy as np
import torch
from hewn.core.errors import ConfigError


def _layer_list(model) -> tuple[torch.nn.Module, str]:
    """(the module holding the decoder layers, its attribute): model.layers or transformer.h."""
    inner = getattr(model, "model", None) or getattr(model, "transformer", None)
    for name in ("layers", "h"):
        if isinstance(getattr(inner, name, None), torch.nn.ModuleList):
            return inner, name
    raise ConfigError(f"{type(model).__name__}: no decoder layer list (model.layers / transformer.h) to prune")


def _layers(model) -> torch.nn.ModuleList:
    owner, name = _layer_list(model)
    return getattr(owner, name)


@torch.no_grad()
def layer_influence(model, windows: list[np.ndarray]) -> list[float]:
    """Per decoder layer: 1 - mean cosine similarity between its input and output hidden states
    over the tokens of `windows` (higher = the layer changes more = keep it)."""
    n = len(_layers(model))
    sums, count = np.zeros(n), 0
    for w in windows:
        out = model(input_ids=torch.as_tensor(np.asarray(w)[None]), output_hidden_states=True, use_cache=False)
        hs = out.hidden_states
        for i in range(n):
            a, b = hs[i][0].double(), hs[i + 1][0].double()
            sums[i] += float(torch.nn.functional.cosine_similarity(a, b, dim=-1).sum())
        count += len(w)
    return [float(1 - s / count) for s in sums]


def drop_layers(model, drop: list[int]):
    """A copy of `model` without the decoder layers in `drop` (the config and every layer's cache
    index renumbered to match)."""
    n = len(_layers(model))   # checked before the copy: refusing bad indices should not copy the model
    if not drop or any(i < 0 or i >= n for i in drop) or len(set(drop)) >= n:
        raise ConfigError(f"cannot drop layers {drop} of {n}: name distinct indices and keep at least one")
    pruned = copy.deepcopy(model)
    owner, name = _layer_list(pruned)
    keep = [i for i in range(n) if i not in set(drop)]
    kept = torch.nn.ModuleList(getattr(owner, name)[i] for i in keep)
    for new, layer in enumerate(kept):
        for module in layer.modules():
            if hasattr(module, "layer_idx"):
                module.layer_idx = new
    setattr(owner, name, kept)
    cfg = pruned.config
    for key in ("num_hidden_layers", "n_layer"):
        if hasattr(cfg, key):
            setattr(cfg, key, len(keep))
    if getattr(cfg, "layer_types", None):
        cfg.layer_types = [cfg.layer_types[i] for i in keep]
    return pruned



__all__ = ["drop_layers", "layer_influence"]
