"""A model larger than protobuf's 2 GB limit, written on the fly with external data.

The weights are streamed into the data file in chunks, so making the model never holds them in
memory; the graph carries what the cleanup pipeline removes (Identity, a shape computed from
constants) so that compiling it does real work.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

CHUNK_ROWS = 512


def write_big_model(folder: str | Path, *, width: int = 8192, layers: int = 9, seed: int = 0,
                    name: str = "big.onnx") -> Path:
    """`layers` MatMuls of width x width fp32 weights (8192 x 9: 2.4 GB) in `<name>.data`."""
    folder = Path(folder)
    data_name = name + ".data"
    rng = np.random.default_rng(seed)
    scale = np.float32(np.sqrt(12.0 / width))  # uniform(-0.5, 0.5) * scale keeps activations ~unit size
    weights, offset = [], 0
    with open(folder / data_name, "wb") as out:
        for i in range(layers):
            for _ in range(0, width, CHUNK_ROWS):
                chunk = (rng.random((CHUNK_ROWS, width), dtype=np.float32) - np.float32(0.5)) * scale
                out.write(chunk.tobytes())
            tensor = TensorProto(name=f"layer{i}.weight", data_type=TensorProto.FLOAT, dims=[width, width],
                                 data_location=TensorProto.EXTERNAL)
            length = width * width * 4
            for key, value in (("location", data_name), ("offset", offset), ("length", length)):
                entry = tensor.external_data.add()
                entry.key, entry.value = key, str(value)
            weights.append(tensor)
            offset += length
    nodes, inits, prev = [], list(weights), "x"
    for i in range(layers):
        bias = numpy_helper.from_array(rng.standard_normal(width).astype(np.float32) * np.float32(0.1), f"layer{i}.bias")
        inits.append(bias)
        nodes += [helper.make_node("MatMul", [prev, f"layer{i}.weight"], [f"mm{i}"]),
                  helper.make_node("Add", [f"mm{i}", f"layer{i}.bias"], [f"add{i}"]),
                  helper.make_node("Identity", [f"add{i}"], [f"id{i}"]),
                  helper.make_node("Relu", [f"id{i}"], [f"h{i}"])]
        prev = f"h{i}"
    # a reshape whose target shape is computed from constants: constant folding removes it
    inits += [numpy_helper.from_array(np.array([1], np.int64), "one"),
              numpy_helper.from_array(np.array([width], np.int64), "w")]
    nodes += [helper.make_node("Concat", ["one", "w"], ["shape"], axis=0),
              helper.make_node("Reshape", [prev, "shape"], ["y"])]
    graph = helper.make_graph(nodes, "big", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, width])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, width])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    path = folder / name
    onnx.save_model(model, str(path))
    return path
