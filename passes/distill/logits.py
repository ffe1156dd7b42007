"""Logit distillation for causal LMs: train a compressed decoder (a depth-pruned one, say) on
KL to the full model's next-token distributions over calibration text, embeddings frozen (they
are most of a small model's weights and the lm_head is tied to them)."""
from __future__ import annotations

import time

import numpy as np
import torch

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


__all__ = ["distill_logits"]
