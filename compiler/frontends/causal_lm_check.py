"""The KV-cache export against transformers: logits at several (batch, past, sequence) sizes and
greedy generation token for token."""
from __future__ import annotations

import numpy as np
import torch

from hewn.core.errors import VerificationError
from hewn.core.kv_cache import CacheLayout, Decoder, example_feeds
from hewn.core.runtime import run
from hewn.frontends import causal_lm

SIZES = ((1, 0, 7), (1, 7, 1), (2, 5, 3))  # prefill, one decode step, a batch with a past
LOGIT_TOLERANCE = 1e-3                    # relative to the largest logit


def load_checked(model, folder: str):
    """causal_lm.load, with the export checked against transformers (report: frontend.export_check)."""
    from hewn.core.runtime import file_session

    source = causal_lm.load(model, folder)
    source.info["export_check"] = check_logits(model, file_session(str(source.path), threads=2), source.layout)
    return source


def check_logits(model, session, layout: CacheLayout, sizes=SIZES) -> list[dict]:
    """Run `model` (transformers) and the session on the same random cache and ids at each size;
    raise VerificationError when the logits or the cache differ beyond float tolerance."""
    wrapper = causal_lm._WithCache(model, layout.layers).eval()
    rows = []
    for batch, past, seq in sizes:
        feeds = example_feeds(layout, batch, past, seq, seed=past * 31 + seq)
        with torch.no_grad():
            ref = [t.numpy() for t in wrapper(*(torch.from_numpy(v) for v in feeds.values()))]
        got = run(session, None, feeds)
        scale = max(float(np.abs(ref[0]).max()), 1e-6)
        err = max(float(np.abs(g - r).max()) / max(float(np.abs(r).max()), 1e-6) for g, r in zip(got, ref))
        rows.append({"batch": batch, "past": past, "sequence": seq, "max_rel_error": err, "logit_scale": scale})
        if not err <= LOGIT_TOLERANCE:
            raise VerificationError(f"KV-cache export differs from transformers at batch {batch}, past {past}, "
                                    f"sequence {seq}: relative error {err:.2e} > {LOGIT_TOLERANCE}")
    return rows


def check_generation(model, session, layout: CacheLayout, prompts: list[np.ndarray], new_tokens: int = 32) -> dict:
    """Greedy generations from the session (with its cache) and from transformers (recomputing the
    whole sequence each step) must be equal."""
    decoder, same = Decoder(session, layout), 0
    for ids in prompts:
        ours = decoder.generate(ids[None], new_tokens)[0]
        theirs = _torch_greedy(model, ids, new_tokens)
        n = min(len(ours), len(theirs))
        if not np.array_equal(ours[:n], theirs[:n]):
            first = int(np.argmax(ours[:n] != theirs[:n]))
            raise VerificationError(f"greedy generation differs from transformers at token {first} of prompt "
                                    f"{ids.tolist()[:8]}...: {ours[first]} vs {theirs[first]}")
        same += 1
    return {"prompts": same, "new_tokens": new_tokens, "equal": True}


def _torch_greedy(model, ids: np.ndarray, new_tokens: int) -> np.ndarray:
    """transformers' forward over the whole sequence at every step: no cache, so it checks ours."""
    seq = torch.from_numpy(ids[None].astype(np.int64))
    with torch.no_grad():
        for _ in range(new_tokens):
            logits = model(input_ids=seq, use_cache=False).logits
            seq = torch.cat([seq, logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    return seq[0, len(ids):].numpy()


__all__ = ["check_generation", "check_logits", "load_checked"]
