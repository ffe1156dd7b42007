"""ONNX names for what a torch module returns, and for the dynamic dims of its outputs.

Output names: a module may declare them (`output_names = ("sentence_embedding",)` on its class,
as torch.onnx.export's argument of that name); otherwise a Hugging Face ModelOutput or a dict
names its tensors by key (`last_hidden_state`, `logits`; a tuple inside one by position,
`hidden_states.0`); any other result is named by position: a lone tensor `output`, several
`output_0`, `output_1`, ...
Output dims: the exporters name them after the node that makes them
(`LayerNormalizationoutput_0_dim_0`); a dim that follows one labelled input dim between the
example and the export's second size gets that dim's label (`batch`, `sequence`).
"""
from __future__ import annotations

import onnx
import torch

from hewn.core.errors import ConfigError


def output_names(result, module: torch.nn.Module, inputs: list[str]) -> list[str]:
    """One name per tensor of `result` (in torch_run.flatten_outputs' order)."""
    derived = _names(result, "")
    declared = getattr(module, "output_names", None)
    if declared is not None:
        declared = [declared] if isinstance(declared, str) else list(declared) \
            if isinstance(declared, (list, tuple)) else None
        bad = _bad(declared, inputs) if declared is not None else "is not a string or a list of strings"
        if bad is None and len(declared) != len(derived):
            bad = f"has {len(declared)} name(s) and forward returns {len(derived)} tensor(s)"
        if bad:
            raise ConfigError(f"{type(module).__name__}.output_names {bad}: give one distinct name per output "
                              f"tensor, none equal to an input name")
        return declared
    keyed = isinstance(result, dict) or hasattr(result, "to_tuple")
    return derived if keyed and _bad(derived, inputs) is None else _positional(len(derived))


def _names(value, prefix: str) -> list[str]:
    if isinstance(value, torch.Tensor):
        return [prefix or "0"]
    if isinstance(value, dict):            # a ModelOutput is one (its None fields are left out, as in to_tuple)
        keyed = [(str(k), v) for k, v in value.items()]
    elif hasattr(value, "to_tuple"):
        keyed = [(str(i), v) for i, v in enumerate(value.to_tuple())]
    elif isinstance(value, (tuple, list)):
        keyed = [(str(i), v) for i, v in enumerate(value)]
    else:
        return []
    return [n for key, v in keyed for n in _names(v, f"{prefix}.{key}" if prefix else key)]


def _positional(count: int) -> list[str]:
    return ["output"] if count == 1 else [f"output_{i}" for i in range(count)]


def _bad(names: list, inputs: list[str]) -> str | None:
    """Why `names` cannot name ONNX outputs (None when they can)."""
    if any(not isinstance(n, str) or not n for n in names):
        return "holds an empty or non-string name"
    if len(set(names)) != len(names):
        return "repeats a name"
    clash = [n for n in names if n in inputs]
    return f"reuses input name(s) {clash}" if clash else None


def output_dims(example: tuple, other: tuple, names: list[str], dims: dict, before: list, after: list,
                outputs: list[str]) -> dict:
    """{output: {dim: label}} for each output dim whose sizes at the example (`before`) and at the
    second size (`after`) are those of labelled input dims of one label, and no other."""
    sizes: dict = {}
    for name, a, b in zip(names, example, other):
        for d, label in dims.get(name, {}).items():
            sizes.setdefault((a.shape[d], b.shape[d]), set()).add(label)
    found: dict = {}
    for out, x, y in zip(outputs, before, after):
        for d, (a, b) in enumerate(zip(x, y)):
            labels = sizes.get((a, b), set()) if a != b and len(x) == len(y) else set()
            if len(labels) == 1:
                found.setdefault(out, {})[d] = next(iter(labels))
    return found


def label_output_dims(model: onnx.ModelProto, found: dict) -> None:
    """Write the labels into the model's outputs, in place; the exporter's name for a dim is
    replaced everywhere else in the graph too when it always stood for that one label."""
    renamed: dict = {}
    for value in model.graph.output:
        shape = value.type.tensor_type.shape
        for d, label in found.get(value.name, {}).items():
            if d >= len(shape.dim) or shape.dim[d].HasField("dim_value"):
                continue
            old = shape.dim[d].dim_param
            if old and old != label:
                renamed.setdefault(old, set()).add(label)
            shape.dim[d].dim_param = label
    renamed = {old: labels.pop() for old, labels in renamed.items() if len(labels) == 1}
    for value in [*model.graph.value_info, *model.graph.output, *model.graph.input]:
        for dim in value.type.tensor_type.shape.dim:
            if dim.dim_param in renamed:
                dim.dim_param = renamed[dim.dim_param]
