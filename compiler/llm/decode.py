"""Run an exported causal LM (frontends/causal_lm.py layout) in ONNX Runtime: greedy generation
with the KV cache, and perplexity over token windows."""
from __future__ import annotations

import math

import numpy as np
from hewn.frontends.causal_lm import CacheLayout, cache_feeds

ROWS = 32
CHUNK = 128


class Decoder:
    """An ORT session over a KV-cache graph."""

    def __init__(self, session, layout: CacheLayout):
        self.session, self.layout = session, layout
        self.outputs = ["logits", *layout.present_names]

    def step(self, ids: np.ndarray, past: dict, past_len: int) -> tuple[np.ndarray, dict]:
        """Feed `ids [batch, n]` after `past_len` cached positions: (logits, the grown cache)."""
        out = self.session.run(self.outputs, cache_feeds(ids, past, past_len))
        return out[0], dict(zip(self.layout.past_names, out[1:]))

    def generate(self, ids: np.ndarray, new_tokens: int) -> np.ndarray:
        """Greedy continuation of `ids [1, n]`: prefill once, then one token per step."""
        logits, past = self.step(ids, self.layout.empty_past(ids.shape[0]), 0)
        length, tokens = ids.shape[1], []
        for _ in range(new_tokens):
            token = logits[:, -1].argmax(-1)[:, None]
            tokens.append(token)
            logits, past = self.step(token, past, length)
            length += 1
        return np.concatenate(tokens, axis=1)

    def window_nll(self, window: np.ndarray) -> tuple[float, int]:
        """Summed negative log-likelihood of tokens 1.. of `window [n]` and how many were scored.
        The window goes through in CHUNK-token steps over the growing cache (the same attention as
        one prefill): logits of 128 positions at a time, not all 512 x vocab (1 GB on Gemma-3)."""
        nll = 0.0
        for start, (logits,) in over_cache(self.session, self.outputs, self.layout, window, len(window) - 1):
            targets = window[start + 1:start + 1 + logits.shape[1]]
            logits = logits[0, :len(targets)]          # the window's last position predicts nothing
            for a in range(0, len(logits), ROWS):    # float64 in row chunks
                rows = logits[a:a + ROWS].astype(np.float64)
                top = rows.max(-1, keepdims=True)
                logz = np.log(np.exp(rows - top).sum(-1)) + top[:, 0]
                nll += float((logz - rows[np.arange(len(rows)), targets[a:a + len(rows)]]).sum())
        return nll, len(window) - 1

    def perplexity(self, windows: list[np.ndarray]) -> float:
        nll = count = 0
        for w in windows:
            a, b = self.window_nll(w)
            nll, count = nll + a, count + b
        return math.exp(nll / count)


def over_cache(session, fetch: list[str], layout: CacheLayout, window: np.ndarray, end: int | None = None):
    """Run `window [n]` (positions up to `end`) through `session` in CHUNK-token steps, the cache
    carried from step to step; `fetch` ends with layout.present_names. Yields (start, the other
    fetched outputs of that step)."""
    past, n = layout.empty_past(), len(fetch) - len(layout.present_names)
    for start in range(0, len(window) if end is None else end, CHUNK):
        out = session.run(fetch, cache_feeds(window[None, start:start + CHUNK], past, start))
        past = dict(zip(layout.past_names, out[n:]))
        yield start, out[:n]


def windows(tokens: np.ndarray, size: int, limit: int | None = None) -> list[np.ndarray]:
    """Consecutive non-overlapping windows of `size` tokens (the last partial one dropped)."""
    out = [tokens[i:i + size] for i in range(0, len(tokens) - size + 1, size)]
    return out[:limit] if limit else out


__all__ = ["Decoder", "over_cache", "windows"]
