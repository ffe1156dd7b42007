"""KV-cache ONNX files (laid out as frontends/causal_lm.py exports them): recognised by their
inputs (their cache layout: hewn.core.kv_cache.layout_from_onnx). Torch-free: compressing such a file never loads torch."""
from __future__ import annotations

from pathlib import Path

import onnx



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


__all__ = ["is_kv_cache_onnx"]
