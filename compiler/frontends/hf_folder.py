"""A local Hugging Face model folder and a task, as `optimum-cli export onnx --model DIR --task T`
takes them, turned into what hewn.compile takes: the module, its example inputs, a calibration
stream and the task's metric. `hewn compile DIR --task T` goes through here, then through the same
compile() as every other model.

Offline only: the model, tokenizer and image processor load with `from_pretrained(folder,
local_files_only=True)`; nothing is fetched from a model hub. Everything about the folder and the
calibration files is checked before the model loads, each problem as one line. Torch and
transformers are imported only when a model is loaded.
"""
from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np

from hewn.core.errors import ConfigError, InputMismatchError

TASKS = {
    "feature-extraction": "sentence embeddings: mean of last_hidden_state over attention_mask (AutoModel), "
                          "output sentence_embedding",
    "text-classification": "the logits of a sequence classifier (AutoModelForSequenceClassification)",
    "image-classification": "the logits of an image classifier (AutoModelForImageClassification), input "
                            "pixel_values",
    "causal-lm": "a decoder with its KV cache, weights compressed to 4/8 bits under a perplexity budget "
                 "(AutoModelForCausalLM; needs --calib corpus.txt)",
}
AUTO_CLASS = {"feature-extraction": "AutoModel", "text-classification": "AutoModelForSequenceClassification",
              "image-classification": "AutoModelForImageClassification", "causal-lm": "AutoModelForCausalLM"}
METRICS = {"feature-extraction": "cosine", "text-classification": "top1", "image-classification": "top1",
           "causal-lm": None}   # the causal-LM route measures perplexity itself
TEXT_TASKS = ("feature-extraction", "text-classification", "causal-lm")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")
MAX_LENGTH = 128          # tokens per calibration sample: lines are padded / truncated to min(this, longest line)
SENTENCE = "The quick brown fox jumps over the lazy dog."   # the example input of a text task without --calib
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


@dataclass
class FolderModel:
    """What compile() takes for the folder: compile(module, example_inputs=..., calib_data=...,
    tokenizer=...)."""

    task: str
    module: Any                         # torch.nn.Module: a head of hf_heads, or the causal LM itself
    example_inputs: Optional[dict]      # None for causal-lm (its route makes its own inputs)
    calib_data: Any                     # a function returning a fresh iterator of samples; [text] for causal-lm
    tokenizer: Optional[str]            # the tokenizer folder, for causal-lm (compile's tokenizer=)
    metric: Optional[str]               # METRICS[task]


def load(folder, task: str, calib=None, tokenizer=None) -> FolderModel:
    """The model in `folder` for `task` (one of TASKS), with `calib` (a .txt of one sample per line
    for text tasks, a folder of images for image-classification, a .npz/.npy of model inputs for
    either; a corpus .txt or token ids for causal-lm) as its calibration stream. `tokenizer` is a
    tokenizer folder other than `folder`."""
    if task not in TASKS:
        raise ConfigError(f"--task {task!r} is not a task hewn knows; give one of: {', '.join(TASKS)}")
    path = check_folder(folder)
    kind = calib_kind(calib, task)
    tok_folder = _tokenizer_folder(path, tokenizer) if task in TEXT_TASKS and kind != "arrays" else None
    if task == "causal-lm":
        return _causal_lm(path, calib, kind, tok_folder)
    from hewn.frontends import hf_heads

    head = {"feature-extraction": hf_heads.SentenceEmbedding, "text-classification": hf_heads.TextLogits,
            "image-classification": hf_heads.ImageLogits}[task]
    model = pretrained(path, task).float()
    if kind == "arrays":
        stream = _arrays(calib)
    elif task == "image-classification":
        stream = image_samples(calib, path, model.config) if calib else None
    else:
        stream = text_samples(calib, _tokenizer(tok_folder), _length_cap(model.config)) if calib else None
    example = _first(stream) if stream else _default_example(task, path, model.config, tok_folder)
    return FolderModel(task, head(model).eval(), example, stream, None, METRICS[task])


def check_folder(folder) -> Path:
    path = Path(folder)
    if not path.exists():
        raise InputMismatchError(f"{folder}: no such folder; give a local Hugging Face model folder (what "
                                 f"save_pretrained writes: config.json and the weights)")
    if not path.is_dir():
        raise InputMismatchError(f"{folder} is a file; --task takes a Hugging Face model folder (config.json and the "
                                 f"weights), or drop --task to compile an ONNX file")
    if not (path / "config.json").is_file():
        raise InputMismatchError(f"{folder} holds no config.json, so it is not a Hugging Face model folder; save the "
                                 f"model there with model.save_pretrained({str(folder)!r})")
    return path


def calib_kind(calib, task: str) -> Optional[str]:
    """'text', 'images' or 'arrays' (None without calib), refused when it does not fit the task."""
    if calib is None:
        if task == "causal-lm":
            raise InputMismatchError("--task causal-lm needs --calib corpus.txt (a few paragraphs of text the model "
                                     "should keep predicting well; perplexity on it is the budget's measure)")
        return None
    p = Path(calib)
    if not p.exists():
        raise InputMismatchError(f"--calib {calib}: no such file or folder")
    if p.is_file() and p.suffix == ".txt":
        if task == "image-classification":
            raise InputMismatchError(f"--calib {calib} is text; --task image-classification calibrates on images: "
                                     f"give a folder of {'/'.join(IMAGE_SUFFIXES)} files")
        return "text"
    if p.is_file() and p.suffix in (".npz", ".npy"):
        return "arrays"
    if p.is_dir() and task == "image-classification":
        if not _images(p) and not any(f.suffix in (".npz", ".npy") for f in p.iterdir()):
            raise InputMismatchError(f"--calib {calib}: the folder holds no images ({', '.join(IMAGE_SUFFIXES)})")
        return "images" if _images(p) else "arrays"
    if p.is_dir() and _images(p):
        raise InputMismatchError(f"--calib {calib} holds images; --task {task} calibrates on text: give a .txt file "
                                 f"with one sample per line")
    if p.is_dir() and task != "causal-lm":
        return "arrays"    # a folder of .npz/.npy samples (calib_files says when it holds none)
    raise InputMismatchError(f"--calib {calib}: --task {task} takes a .txt file (one sample per line"
                             f"{'' if task != 'causal-lm' else ', or a whole corpus'}) or a .npz of "
                             f"{'token ids' if task == 'causal-lm' else 'model inputs'}")


def _images(folder: Path) -> list[Path]:
    return sorted(f for f in folder.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES and f.is_file())


def _tokenizer_folder(path: Path, tokenizer) -> Path:
    from hewn.frontends.lm_text import TOKENIZER_FILES

    folder = Path(tokenizer) if tokenizer else path
    if not folder.is_dir() or not any((folder / name).is_file() for name in TOKENIZER_FILES):
        raise InputMismatchError(f"{folder} holds no tokenizer ({', '.join(TOKENIZER_FILES[:3])}, ...), which a text "
                                 f"task needs; save it there with tokenizer.save_pretrained({str(folder)!r}) or give "
                                 f"--tokenizer DIR")
    return folder


def pretrained(path: Path, task: str):
    """The folder's model as transformers' Auto class for `task` loads it, offline, in eval mode."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")   # a folder's config may still name a hub repo
    import transformers

    kind = AUTO_CLASS[task]
    try:
        with _no_progress_bars():
            model = getattr(transformers, kind).from_pretrained(str(path), local_files_only=True)
    except Exception as exc:  # noqa: BLE001 - transformers' own errors: missing weights, an unknown architecture
        text = str(exc).strip()
        raise InputMismatchError(f"{path}: transformers cannot load it as {kind} for --task {task} ({type(exc).__name__}"
                                 f": {text.splitlines()[0][:200] if text else ''}); check that the folder holds the "
                                 f"weights and that the model fits the task") from None
    return model.eval()


@contextlib.contextmanager
def _no_progress_bars():
    """transformers' 'Loading weights' bar: hewn's own progress says what step runs."""
    from transformers.utils import logging as hf_logging

    shown = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if shown:
            hf_logging.enable_progress_bar()


def _tokenizer(folder: Path):
    from hewn.frontends.lm_text import _tokenizer as load_tokenizer

    tok = load_tokenizer(folder)
    if tok.pad_token is None:      # GPT-style tokenizers: pad with end-of-text (the mask hides it)
        if tok.eos_token is None:
            raise ConfigError(f"the tokenizer in {folder} has no padding token and no end-of-text token to pad "
                              f"with; set tokenizer.pad_token and save it again")
        tok.pad_token = tok.eos_token
    return tok


def _length_cap(config) -> int:
    return min(MAX_LENGTH, getattr(config, "max_position_embeddings", None) or MAX_LENGTH)


def text_samples(calib, tok, cap: int) -> Callable:
    """A function returning a fresh iterator over --calib's non-empty lines, each tokenized to
    {input_ids, attention_mask} [1, L] int64, L = min(cap, the longest line's token count)."""
    def lines():
        with open(calib, encoding="utf-8") as handle:
            for line in handle:
                if line.strip():
                    yield line.strip()
    try:
        longest = max((len(tok(line, truncation=True, max_length=cap)["input_ids"]) for line in lines()), default=0)
    except (OSError, UnicodeDecodeError) as exc:
        raise InputMismatchError(f"--calib {calib}: cannot read it as UTF-8 text ({exc})") from None
    if not longest:
        raise InputMismatchError(f"--calib {calib} holds no text: give one sample per line")

    def samples():
        for line in lines():
            enc = tok(line, padding="max_length", truncation=True, max_length=longest, return_tensors="pt")
            yield {"input_ids": enc["input_ids"].long(), "attention_mask": enc["attention_mask"].long()}
    return samples


def image_samples(calib, path: Path, config) -> Callable:
    """A function returning a fresh iterator over --calib's images (sorted by name), each
    {pixel_values: [1, 3, H, W]} as the folder's image processor (or resize + ImageNet
    normalization, without one) makes it."""
    files = _images(Path(calib))
    prepare = _preprocess(path, config)
    _pixels(files[0], prepare)      # a bad first file is said now, the others when they are read
    return lambda: ({"pixel_values": _pixels(f, prepare)} for f in files)


def _pixels(file: Path, prepare):
    from PIL import Image

    try:
        with Image.open(file) as image:
            rgb = image.convert("RGB")
    except Exception as exc:  # noqa: BLE001 - PIL raises several kinds for a broken file
        raise InputMismatchError(f"--calib {file}: cannot read it as an image ({type(exc).__name__}: "
                                 f"{str(exc).splitlines()[0] if str(exc) else ''})") from None
    return prepare(rgb)


def _preprocess(path: Path, config) -> Callable:
    import torch

    if (path / "preprocessor_config.json").is_file():
        from transformers import AutoImageProcessor

        try:
            processor = AutoImageProcessor.from_pretrained(str(path), local_files_only=True)
        except Exception as exc:  # noqa: BLE001 - transformers' own errors
            raise InputMismatchError(f"{path}/preprocessor_config.json: transformers cannot load it ({type(exc).__name__}"
                                     f"); fix or remove it (without it images are resized and ImageNet-normalized)"
                                     ) from None
        return lambda image: processor(images=image, return_tensors="pt")["pixel_values"].float()
    height, width = _image_size(config)
    mean, std = np.asarray(IMAGENET_MEAN, np.float32), np.asarray(IMAGENET_STD, np.float32)

    def prepare(image):
        array = np.asarray(image.resize((width, height)), np.float32) / 255.0
        return torch.from_numpy(((array - mean) / std).transpose(2, 0, 1)[None].copy())
    return prepare


def _image_size(config) -> tuple[int, int]:
    size = getattr(config, "image_size", None) or 224
    return (int(size), int(size)) if isinstance(size, (int, float)) else (int(size[0]), int(size[-1]))


def _arrays(calib) -> Callable:
    from hewn.frontends.calib_files import calib_source

    source = calib_source(str(calib))
    return lambda: (_tensors(s) for s in source())


def _tensors(sample):
    import torch

    as_tensor = lambda a: torch.from_numpy(np.array(a))  # noqa: E731 - a copy: the arrays may be memory-mapped
    return {k: as_tensor(v) for k, v in sample.items()} if isinstance(sample, dict) else \
        tuple(as_tensor(v) for v in sample)


def _first(stream: Callable):
    for sample in stream():
        return sample
    raise InputMismatchError("--calib holds no samples")


def _default_example(task: str, path: Path, config, tok_folder) -> dict:
    """Without --calib: a short English sentence, or a black image as the folder's processor makes it."""
    if task == "image-classification":
        from PIL import Image

        height, width = _image_size(config)
        return {"pixel_values": _preprocess(path, config)(Image.new("RGB", (width, height)))}
    enc = _tokenizer(tok_folder)(SENTENCE, truncation=True, max_length=_length_cap(config), return_tensors="pt")
    return {"input_ids": enc["input_ids"].long(), "attention_mask": enc["attention_mask"].long()}


def _causal_lm(path: Path, calib, kind: str, tok_folder) -> FolderModel:
    if kind == "arrays":
        from hewn.frontends.calib_files import token_ids

        return FolderModel("causal-lm", pretrained(path, "causal-lm"), None, token_ids(str(calib)), None, None)
    try:
        text = Path(calib).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputMismatchError(f"--calib {calib}: cannot read it as UTF-8 text ({exc})") from None
    return FolderModel("causal-lm", pretrained(path, "causal-lm"), None, [text], str(tok_folder), None)
