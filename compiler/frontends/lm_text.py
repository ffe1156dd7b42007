"""Calibration text for causal LMs: which data is text or token ids, and the token windows
perplexity is measured on. Torch-free."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from hewn.core.errors import ConfigError

WINDOW, MAX_WINDOWS = 512, 8


def takes_text(calib_data) -> bool:
    """calib_data given as text or token-id sequences (1-D integers), not as model inputs. Looks
    at the first item's type only: user data of any other kind is never converted here."""
    if isinstance(calib_data, str):
        return True
    if not isinstance(calib_data, (list, tuple)) or not calib_data:
        return False
    first = calib_data[0]
    if isinstance(first, str):
        return True
    if isinstance(first, np.ndarray):
        return first.ndim == 1 and np.issubdtype(first.dtype, np.integer)
    if isinstance(first, list):
        return bool(first) and all(isinstance(t, int) and not isinstance(t, bool) for t in first)
    if type(first).__name__ == "Tensor" and hasattr(first, "is_floating_point"):  # torch, without importing it
        return first.dim() == 1 and not first.is_floating_point() and not first.is_complex()
    return False


def token_windows(calib_data, tokenizer) -> list[np.ndarray]:
    if calib_data is None:
        raise ConfigError("compressing a causal LM needs calib_data=: text (with tokenizer=) or token-id arrays")
    items = [calib_data] if isinstance(calib_data, str) else list(calib_data)
    ids: list[int] = []
    for item in items:
        if isinstance(item, str):
            if tokenizer is None:
                raise ConfigError("calib_data holds text: pass tokenizer= (a Hugging Face tokenizer or a folder with one)")
            ids += list(_tokenizer(tokenizer)(item)["input_ids"])
        else:
            ids += [int(t) for t in np.asarray(item).reshape(-1)]
    if len(ids) < 16:
        raise ConfigError(f"calib_data has {len(ids)} tokens; perplexity needs at least 16 (a few paragraphs is enough)")
    size = min(WINDOW, len(ids))
    arr = np.asarray(ids, np.int64)
    return [arr[i:i + size] for i in range(0, len(arr) - size + 1, size)][:MAX_WINDOWS]


def _tokenizer(tokenizer):
    if isinstance(tokenizer, (str, Path)):
        from transformers import AutoTokenizer
        return AutoTokenizer.from_pretrained(str(tokenizer))
    return tokenizer


def check_tokens(windows: list[np.ndarray], vocab: int) -> None:
    """Token ids the model's embedding has rows for (vocab <= 1: the graph does not say)."""
    from hewn.core.errors import InputMismatchError

    top = max(int(w.max()) for w in windows)
    low = min(int(w.min()) for w in windows)
    if low < 0 or (vocab > 1 and top >= vocab):
        bad = low if low < 0 else top
        raise InputMismatchError(f"calib_data holds token id {bad}, outside the model's vocabulary of {vocab}: "
                                 f"tokenize the text with the model's own tokenizer")


__all__ = ["check_tokens", "takes_text", "token_windows", "WINDOW", "MAX_WINDOWS"]
