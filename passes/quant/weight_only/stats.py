"""Calibration statistics for weight-only compression, streamed over the calibration windows
through the KV cache: each quantizable MatMul input's X^T X (its Hessian, for GPTQ and the
output error of every option) and its int8-per-block error (what MatMulNBits' accuracy_level 4
costs inside the kernel)."""
from __future__ import annotations

import numpy as np
import onnx
from onnx import helper

from hewn.core.kv_cache import CacheLayout, over_cache
from hewn.core.runtime import release_memory, session_options


def activation_stats(model: onnx.ModelProto, folder: str, inputs: list[str], layout: CacheLayout,
                     calib: list[np.ndarray], threads: int = 2) -> dict[str, tuple[np.ndarray, dict]]:
    """Per tensor in `inputs` (last dim K), over the calibration windows: X^T X / tokens (the
    Hessian of a MatMul's output error) and {block: relative squared error of quantizing X to
    int8 per block of that many values}, what accuracy_level 4 does inside MatMulNBits. `model`
    may refer to external data in `folder`; it is probed in place, never copied."""
    import onnxruntime as ort

    wanted = list(dict.fromkeys(inputs))
    # the probed tensors and the cache are the only outputs: ORT then drops what only the logits
    # need (the lm_head product: 512 x 262k floats, half a gigabyte per window on Gemma-3)
    original = list(model.graph.output)
    fetch = wanted + layout.present_names
    del model.graph.output[:]
    model.graph.output.extend(helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, None) for n in fetch)
    try:  # from the serialized graph; external weights are read from `folder` by ORT itself
        opts = session_options(threads, prepack=False)
        opts.add_session_config_entry("session.model_external_initializers_file_folder_path", folder)
        session = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    finally:
        del model.graph.output[:]
        model.graph.output.extend(original)
    sums: dict[str, np.ndarray] = {}
    act: dict[str, dict] = {}
    count = 0
    for w in calib:   # in CHUNK-token steps over the cache: the same rows, a quarter of the activations
        for _, out in over_cache(session, fetch, layout, w):
            for name, value in zip(wanted, out):
                flat = value.reshape(-1, value.shape[-1])
                f64 = flat.astype(np.float64)
                if name in sums:
                    sums[name] += f64.T @ f64
                else:
                    sums[name] = f64.T @ f64
                errs = act.setdefault(name, {})
                for block in (16, 32, 64, 128, 256):
                    if flat.shape[1] % block == 0:
                        e, r = _int8_block_error(flat, block)
                        old = errs.get(block, (0.0, 0.0))
                        errs[block] = (old[0] + e, old[1] + r)
        count += len(w)
    del session
    release_memory()
    for h in sums.values():
        h /= count    # in place: a second copy of every Hessian was 835 MB on Gemma-3
    return {n: (h, {b: e / max(r, 1e-30) for b, (e, r) in act[n].items()}) for n, h in sums.items()}


def _int8_block_error(x: np.ndarray, block: int) -> tuple[float, float]:
    b = x.reshape(x.shape[0], -1, block).astype(np.float32)
    scale = np.abs(b).max(-1, keepdims=True) / 127.0
    scale[scale == 0] = 1.0
    err = b - np.round(b / scale) * scale
    return float((err ** 2).sum()), float((b ** 2).sum())


__all__ = ["activation_stats"]
