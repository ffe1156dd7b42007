"""Which outputs are class scores, so that top-1 agreement may judge them (issue 27).

The argmax of a sentence embedding, a feature map, box coordinates or a regression head means
nothing: judging all-MiniLM's [1, 384] embedding by it kept 32 of 36 MatMuls float at cosine
0.9915. Top-1 agreement applies only to an output that is evidently class scores:

- produced by Softmax / LogSoftmax (through reshapes and casts), or
- named like class scores (logits, scores, probs, class), or
- any [batch, classes] output when the user said the task is classification (metric="top1", or a
  classification --task).

metric="cosine" says it is not a classifier: no output is judged by top-1 agreement.
"""
from __future__ import annotations

import re
from typing import Optional

import onnx

PASS_THROUGH = ("Identity", "Reshape", "Flatten", "Squeeze", "Cast")
SCORE_OPS = ("Softmax", "LogSoftmax")
SCORE_NAME = re.compile(r"(^|[^a-z])(logits?|scores?|probs?|probabilities|class(es)?)([^a-z]|$)", re.I)


def class_outputs(model: onnx.ModelProto, metric_name: Optional[str] = None) -> dict[int, str]:
    """{output index: why it is class scores} of the rank-2 float outputs that are."""
    if metric_name == "cosine":
        return {}
    producer = {out: node for node in model.graph.node for out in node.output}
    found = {}
    for i, value in enumerate(model.graph.output):
        tensor = value.type.tensor_type
        if tensor.elem_type not in (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE):
            continue
        if tensor.HasField("shape") and len(tensor.shape.dim) != 2:
            continue
        why = _why(value.name, producer, metric_name)
        if why:
            found[i] = why
    return found


def _why(name: str, producer: dict, metric_name: Optional[str]) -> str:
    node = producer.get(name)
    while node is not None and node.op_type in PASS_THROUGH:
        node = producer.get(node.input[0]) if node.input else None
    if node is not None and node.op_type in SCORE_OPS:
        return f"output '{name}' is produced by {node.op_type}"
    if SCORE_NAME.search(name):
        return f"output '{name}' is named like class scores"
    if metric_name == "top1":
        return f"metric='top1' says output '{name}' holds class scores"
    return ""


def judged_by(classes: dict[int, str], metric_name: Optional[str]) -> str:
    """The words the report uses for how quality was judged, and why."""
    if metric_name == "cosine":
        return "output cosine (metric='cosine')"
    if classes:
        return f"output error and top-1 agreement ({'; '.join(classes.values())})"
    return ("output error (1 - cosine, or relative error): no output is evidently class scores, so top-1 "
            "agreement judges none; metric='top1' says they are")


__all__ = ["class_outputs", "judged_by"]
