"""Decoder structure candidates for torch causal LMs: whole-layer (depth) pruning ranked by how
little each layer changes its input, and logit distillation to win accuracy back.

Depth: a layer whose output is nearly its input (cosine similarity of the hidden state before and
after it, over calibration tokens: ShortGPT's "block influence") contributes least; dropping it
removes its weights, its KV cache and its share of every step. Distillation then trains the
remaining layers (embeddings frozen: they are 63% of a small model's weights and the lm_head is
tied to them) to match the unpruned model's next-token distributions on the calibration text.
"""
from __future__ import annotations

import copy
import time

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


def distill_logits(student, teacher, windows: list[np.ndarray], steps: int, *, lr: float = 3e-5, tokens: int = 256,
                   say=None) -> dict:
    """Train `student` (in place) for `steps` steps of KL(teacher || student) over next-token
    distributions, one `tokens`-long slice of the calibration windows per step; embeddings frozen.
    Returns the loss at the start and the end."""
    say = say or (lambda msg: None)
    frozen = {id(p) for m in student.modules() if isinstance(m, torch.nn.Embedding) for p in m.parameters()}
    frozen |= {id(p) for p in student.get_output_embeddings().parameters()} if student.get_output_embeddings() else set()
    params = [p for p in student.parameters() if id(p) not in frozen]
    for p in student.parameters():
        p.requires_grad_(id(p) not in frozen)
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    rng = np.random.default_rng(0)
    student.train()
    teacher.eval()
    losses, started = [], time.perf_counter()
    for step in range(steps):
        w = windows[step % len(windows)]
        start = int(rng.integers(0, max(1, len(w) - tokens + 1)))
        ids = torch.as_tensor(np.asarray(w[start:start + tokens])[None])
        with torch.no_grad():
            target = torch.log_softmax(teacher(input_ids=ids, use_cache=False).logits.float(), -1)
        logp = torch.log_softmax(student(input_ids=ids, use_cache=False).logits.float(), -1)
        loss = torch.nn.functional.kl_div(logp, target, log_target=True, reduction="batchmean") / ids.shape[1]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        losses.append(float(loss.detach()))
        if step % 10 == 0 or step == steps - 1:
            say(f"distillation step {step + 1}/{steps}: KL {losses[-1]:.4f}")
        del target, logp, loss
    student.eval()
    for p in student.parameters():
        p.requires_grad_(False)
    head = float(np.mean(losses[:5])) if losses else None
    tail = float(np.mean(losses[-5:])) if losses else None
    return {"steps": steps, "tokens_per_step": tokens, "lr": lr, "kl_first": head, "kl_last": tail,
            "seconds": round(time.perf_counter() - started, 1)}


__all__ = ["distill_logits", "drop_layers", "layer_influence"]
