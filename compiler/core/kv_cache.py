"""A KV-cache decoder graph and how to run it in ONNX Runtime (numpy only, no torch): its cache
layout, feeds for any (batch, past, sequence), greedy generation with the cache, perplexity over
token windows. Graphs laid out so come from frontends/causal_lm.py (torch) or a KV-cache ONNX file."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from hewn.core.errors import ConfigError
from hewn.core.runtime import run

ROWS = 32
CHUNK = 128


@dataclass(frozen=True)
class CacheLayout:
    """How the exported graph names and shapes its cache."""
    layers: int
    kv_heads: int
    head_dim: int
    vocab: int

    @property
    def past_names(self) -> list[str]:
        return [f"past_key_values.{i}.{k}" for i in range(self.layers) for k in ("key", "value")]

    @property
    def present_names(self) -> list[str]:
        return [f"present.{i}.{k}" for i in range(self.layers) for k in ("key", "value")]

    def empty_past(self, batch: int = 1) -> dict[str, np.ndarray]:
        shape = (batch, self.kv_heads, 0, self.head_dim)
        return {n: np.zeros(shape, np.float32) for n in self.past_names}


def cache_feeds(ids: np.ndarray, past: dict[str, np.ndarray], past_len: int) -> dict[str, np.ndarray]:
    """The graph's inputs for `ids [batch, n]` after `past_len` cached positions held in `past`:
    a mask over every position, positions continuing after the past."""
    batch, n = ids.shape
    return {"input_ids": ids.astype(np.int64), "attention_mask": np.ones((batch, past_len + n), np.int64),
            "position_ids": np.tile(np.arange(past_len, past_len + n, dtype=np.int64), (batch, 1)), **past}


def example_feeds(layout: CacheLayout, batch: int, past: int, sequence: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Random ids and cache at the given sizes."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, min(layout.vocab, 1000), (batch, sequence), dtype=np.int64)
    cache = {n: rng.standard_normal((batch, layout.kv_heads, past, layout.head_dim)).astype(np.float32)
             for n in layout.past_names}
    return cache_feeds(ids, cache, past)


def layout_from_onnx(model) -> CacheLayout:
    """The cache layout of a KV-cache ModelProto, read from its inputs and outputs; a graph that does
    not follow the layout (the names hewn's export gives, rank-4 caches) is refused naming what differs."""
    from hewn.core.errors import UnsupportedModelError

    past = [i for i in model.graph.input if i.name.startswith("past_key_values.")]
    layout = "input_ids, attention_mask, position_ids, past_key_values.N.key/value -> logits, present.N.key/value"
    dims = past[0].type.tensor_type.shape.dim if past else []
    if len(dims) != 4:
        raise UnsupportedModelError(f"{past[0].name if past else 'the model'}: not a [batch, kv_heads, past, head_dim] "
                                    f"cache; hewn reads KV-cache models laid out as {layout}")
    kv_heads, head_dim = dims[1].dim_value, dims[3].dim_value
    if not kv_heads or not head_dim:
        raise ConfigError(f"{past[0].name} has no fixed kv-heads/head-dim sizes: cannot build its empty cache")
    found = CacheLayout(len(past) // 2, kv_heads, head_dim, 1)
    inputs, outputs = {i.name for i in model.graph.input}, {o.name for o in model.graph.output}
    missing = [n for n in ("input_ids", "attention_mask", "position_ids", *found.past_names) if n not in inputs] + \
              [n for n in ("logits", *found.present_names) if n not in outputs]
    if missing:
        raise UnsupportedModelError(f"the KV-cache model has no {', '.join(missing[:3])}"
                                    f"{f' (and {len(missing) - 3} more)' if len(missing) > 3 else ''}; hewn reads "
                                    f"KV-cache models laid out as {layout} (what it exports from transformers)")
    logits = next(o for o in model.graph.output if o.name == "logits")
    shape = logits.type.tensor_type.shape.dim
    vocab = shape[-1].dim_value if len(shape) else 0
    return CacheLayout(found.layers, kv_heads, head_dim, vocab or 1)


@dataclass
class TokenWindows:
    """A causal LM's calibration data: token windows and the cache layout they run through."""
    layout: CacheLayout
    windows: list   # 1-D int64 arrays
    float_perplexity: float | None = None   # the input model's, on the check windows (what budgets are relative to)


class Decoder:
    """An ORT session over a KV-cache graph."""

    def __init__(self, session, layout: CacheLayout):
        self.session, self.layout = session, layout
        self.outputs = ["logits", *layout.present_names]

    @classmethod
    def from_model(cls, model, threads: int = 0) -> "Decoder":
        """A Decoder over a KV-cache model: a CompiledModel, a ModelProto or an .onnx path."""
        import onnx
        from hewn.core.runtime import file_session, make_session

        model = getattr(model, "onnx", model)
        if isinstance(model, onnx.ModelProto):
            return cls(make_session(model, threads=threads), layout_from_onnx(model))
        return cls(file_session(str(model), threads=threads), layout_from_onnx(onnx.load(str(model), load_external_data=False)))

    def step(self, ids: np.ndarray, past: dict, past_len: int) -> tuple[np.ndarray, dict]:
        """Feed `ids [batch, n]` after `past_len` cached positions: (logits, the grown cache)."""
        out = run(self.session, self.outputs, cache_feeds(ids, past, past_len))
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


def split_windows(calib: list[np.ndarray]) -> tuple[list, list]:
    """(statistics windows, check windows): statistics (Hessians) from the first half, perplexity
    checks on the second. GPTQ fits its statistics, and a search that checks on them too reads its
    own fit as quality."""
    half = len(calib) // 2
    return (calib[:half], calib[half:]) if half else (calib, calib)


def float_perplexity(path: str, layout: CacheLayout, calib: list[np.ndarray], threads: int = 2) -> float:
    """The float model's perplexity on the check windows: what the budget is relative to."""
    from hewn.core.runtime import file_session, release_memory

    ppl = Decoder(file_session(path, threads=threads, prepack=False), layout).perplexity(split_windows(calib)[1])
    release_memory()
    return ppl


def over_cache(session, fetch: list[str], layout: CacheLayout, window: np.ndarray, end: int | None = None):
    """Run `window [n]` (positions up to `end`) through `session` in CHUNK-token steps, the cache
    carried from step to step; `fetch` ends with layout.present_names. Yields (start, the other
    fetched outputs of that step)."""
    past, n = layout.empty_past(), len(fetch) - len(layout.present_names)
    for start in range(0, len(window) if end is None else end, CHUNK):
        out = run(session, fetch, cache_feeds(window[None, start:start + CHUNK], past, start))
        past = dict(zip(layout.past_names, out[n:]))
        yield start, out[:n]


def windows(tokens: np.ndarray, size: int, limit: int | None = None) -> list[np.ndarray]:
    """Consecutive non-overlapping windows of `size` tokens (the last partial one dropped)."""
    out = [tokens[i:i + size] for i in range(0, len(tokens) - size + 1, size)]
    return out[:limit] if limit else out


__all__ = ["CacheLayout", "Decoder", "TokenWindows", "float_perplexity", "split_windows", "layout_from_onnx", "cache_feeds", "example_feeds", "over_cache", "windows"]
