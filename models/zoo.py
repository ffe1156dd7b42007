"""The ONNX model-zoo "light" models shipped inside the onnx wheel (opset 9, real architectures).

They store every weight as `ConstantOfShape(shape)`: outputs are constant and prove nothing.
`with_random_weights` gives them seeded random weights of the same shapes (scaled so that
activations neither vanish nor explode) and can expose the logits before the final Softmax,
which a saturated softmax would hide from a comparison.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

LIGHT_DIR = Path(onnx.__file__).parent / "backend" / "test" / "data" / "light"


def light_models() -> dict[str, Path]:
    return {p.stem.removeprefix("light_"): p for p in sorted(LIGHT_DIR.glob("light_*.onnx"))}


def _weight(rng, shape, consumer) -> np.ndarray:
    op, index = consumer
    if op == "BatchNormalization" and index in (1, 4):  # scale, variance: positive
        return rng.uniform(0.5, 1.5, shape)
    if op == "BatchNormalization":
        return rng.normal(0.0, 0.1, shape)
    if op in ("Conv", "Gemm") and index == 1 and len(shape) >= 2:
        fan_in = int(np.prod(shape[1:]))
        return rng.standard_normal(shape) * np.sqrt(1.0 / fan_in)
    return rng.normal(0.0, 0.05, shape)


def with_random_weights(model: onnx.ModelProto, seed: int = 0, expose_logits: bool = True) -> onnx.ModelProto:
    """A copy of a light model whose ConstantOfShape weights are seeded random initializers."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph, rng = out.graph, np.random.default_rng(seed)
    shapes = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    consumer = {}
    for node in graph.node:
        for i, name in enumerate(node.input):
            consumer.setdefault(name, (node.op_type, i))
    kept = []
    for node in graph.node:
        if node.op_type == "ConstantOfShape" and node.input[0] in shapes:
            shape = tuple(int(d) for d in shapes[node.input[0]])
            value = _weight(rng, shape, consumer.get(node.output[0], ("", -1))).astype(np.float32)
            graph.initializer.append(numpy_helper.from_array(value, node.output[0]))
            graph.input.append(onnx.helper.make_tensor_value_info(node.output[0], onnx.TensorProto.FLOAT, shape))
        else:
            kept.append(node)
    del graph.node[:]
    graph.node.extend(kept)
    if expose_logits:
        # IR-3 graph outputs need a shape: take it from shape inference.
        inferred = {v.name: v for v in onnx.shape_inference.infer_shapes(out).graph.value_info}
        softmax = [n for n in graph.node if n.op_type == "Softmax" and n.output[0] in {o.name for o in graph.output}]
        for node in softmax:
            graph.output.append(inferred[node.input[0]])
    return out
