"""Sparse storage: initializers with enough zeros become ONNX sparse initializers (COO).

ONNX and ORT take only int64 indices, so a stored non-zero costs its value plus 8 bytes: a
float32 weight shrinks only above 2/3 zeros, an int8 one above 8/9. Each initializer is
converted only where that makes it smaller; ORT densifies them when it loads the model.
"""
from __future__ import annotations

import onnx
from onnx import helper, numpy_helper
import numpy as np

from hewn.core import external

INDEX_BYTES = 8


def store_sparse(model: onnx.ModelProto) -> tuple[onnx.ModelProto, dict]:
    """A copy of `model` with the initializers that are smaller in COO form stored sparse."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    # Only plain initializers: graph inputs with defaults must stay dense (they can be overridden).
    inputs = {i.name for i in graph.input}
    moved, saved = [], 0
    keep = []
    for init in graph.initializer:
        array = external.to_array(init)
        if init.name in inputs or array.ndim == 0 or array.dtype.kind not in "fiu":
            keep.append(init)
            continue
        flat = array.ravel()
        nonzero = np.flatnonzero(flat)
        dense_bytes = flat.size * flat.itemsize
        sparse_bytes = len(nonzero) * (flat.itemsize + INDEX_BYTES)
        if sparse_bytes >= dense_bytes * 0.9:  # not worth a format ORT must densify at load
            keep.append(init)
            continue
        values = numpy_helper.from_array(flat[nonzero], init.name)
        indices = numpy_helper.from_array(nonzero.astype(np.int64), "")
        graph.sparse_initializer.append(helper.make_sparse_tensor(values, indices, list(array.shape)))
        moved.append(init.name)
        saved += dense_bytes - sparse_bytes
    del graph.initializer[:]
    graph.initializer.extend(keep)
    return out, {"sparse_initializers": len(moved), "bytes_saved": int(saved), "names": moved[:20],
                 "rule": "stored sparse where COO (value + int64 index) is smaller than dense"}
