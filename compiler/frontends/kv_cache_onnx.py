"""KV-cache ONNX files (laid out as frontends/causal_lm.py exports them): recognised by their
inputs (their cache layout: hewn.core.kv_cache.layout_from_onnx). Torch-free: compressing such a file never loads torch."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx

from hewn.core.kv_cache import CacheLayout, example_feeds, layout_from_onnx
from hewn.core.pass_infra import Reference
from hewn.core.runtime import make_session, release_memory, run_all
from hewn.frontends.source import Source

# what a decoder is verified at: prefill, one decode step, a batch with a past (its second row
# left-padded: masked keys must stay masked), a past longer than small sliding windows
SIZES = ((1, 0, 7), (1, 7, 1), (2, 5, 3), (1, 40, 2))


def load(model, base_dir=None) -> Source:
    """A KV-cache ONNX file or ModelProto, through the ONNX frontend's checks (external data that
    leaves the model's folder, a broken file, ...), with its cache layout."""
    from hewn.frontends import from_onnx

    source = from_onnx.load(model, base_dir)
    source.layout = layout_from_onnx(source.model)
    source.info.update(kind="causal_lm", layout=source.layout.__dict__)
    return source


def reference(model: onnx.ModelProto, layout: CacheLayout) -> Reference:
    """The model's outputs (logits and the grown cache) at each of SIZES, on seeded ids and cache."""
    feeds = [sized_feeds(layout, *size) for size in SIZES]
    session = make_session(model, threads=2)
    outputs = run_all(session, feeds)
    del session
    release_memory()
    return Reference(feeds, outputs)


def perplexity(source: Source, windows: list) -> float:
    """The input model's perplexity on the check windows of `windows` (weight-only budgets are
    relative to it: measured before any rewrite)."""
    from hewn.core.kv_cache import Decoder, float_perplexity, split_windows

    if source.path is not None:
        return float_perplexity(str(source.path), source.layout, windows)
    value = Decoder(make_session(source.model, threads=2), source.layout).perplexity(split_windows(windows)[1])
    release_memory()
    return value


def sized_feeds(layout: CacheLayout, batch: int, past: int, seq: int) -> dict[str, np.ndarray]:
    feeds = example_feeds(layout, batch, past, seq, seed=past * 7 + seq)
    if batch > 1:
        feeds["attention_mask"][1, :2] = 0
    return feeds



def is_kv_cache_onnx(model) -> bool:
    """An ONNX model (path or proto) laid out as export_causal_lm lays it out."""
    names = _input_names(model)
    return names is not None and "input_ids" in names and any(n.startswith("past_key_values.") for n in names)


def _input_names(model):
    try:
        if isinstance(model, onnx.ModelProto):
            return [i.name for i in model.graph.input]
        if isinstance(model, (str, Path)) and Path(model).suffix == ".onnx" and Path(model).is_file():
            return [i.name for i in onnx.load(str(model), load_external_data=False).graph.input]
    except Exception:  # noqa: BLE001 - not loadable here: the ONNX frontend says why
        return None
    return None


__all__ = ["SIZES", "is_kv_cache_onnx", "load", "reference", "sized_feeds"]
