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


TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json", "vocab.txt",
                   "spiece.model", "sentencepiece.bpe.model")


def _tokenizer(tokenizer):
    """A tokenizer object as given, or one loaded from a local folder, offline: a name that is
    not an existing folder is refused, never looked up on a model hub."""
    if not isinstance(tokenizer, (str, Path)):
        if not callable(tokenizer):
            raise ConfigError(f"tokenizer= takes a Hugging Face tokenizer or the folder of one, got "
                              f"{type(tokenizer).__name__}")
        return tokenizer
    folder = Path(tokenizer)
    if not folder.is_dir():
        raise ConfigError(f"tokenizer={str(tokenizer)!r} is not a folder here; give the local folder of the model's "
                          f"tokenizer (hewn never downloads one)")
    if not any((folder / name).is_file() for name in TOKENIZER_FILES):
        raise ConfigError(f"tokenizer folder {folder} holds no tokenizer ({', '.join(TOKENIZER_FILES[:3])}, ...); "
                          f"save one there with tokenizer.save_pretrained()")
    import os

    os.environ.setdefault("HF_HUB_OFFLINE", "1")   # a folder's config may still name a hub repo
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    except Exception as exc:  # noqa: BLE001 - transformers' own errors: a broken or unknown tokenizer
        raise ConfigError(f"tokenizer folder {folder}: transformers cannot load it ({type(exc).__name__}: "
                          f"{str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ''})") from None


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
