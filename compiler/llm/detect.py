"""Which models and data take the causal-LM path; torch-free, so compile() can ask for ONNX input
without importing torch."""
from __future__ import annotations

from pathlib import Path

import numpy as np
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


__all__ = ["is_kv_cache_onnx", "takes_text"]
