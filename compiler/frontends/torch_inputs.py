"""How a torch module is called: example_inputs as a tuple (forward()'s order) or a dict of keyword
arguments, plus example_kwargs=. Hugging Face models are called with keywords and take a
`use_cache` flag; both become one module with named tensor arguments (`Bound`), which is what
the capture and the ONNX exporters see.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any

import torch

from hewn.core.errors import ConfigError, InputMismatchError

CONSTANT_TYPES = (bool, int, float, str, type(None))


@dataclass
class Binding:
    module: torch.nn.Module          # what is captured and exported: the model, or a Bound around it
    inputs: tuple                    # the tensors, in the ONNX model's input order
    names: list[str]                 # the ONNX input names
    notes: dict = field(default_factory=dict)   # for the report: keyword inputs, constants, use_cache


class Bound(torch.nn.Module):
    """Calls `model` with keyword arguments; forward() gets named parameters (exec below) so that
    torch.fx, torch.export and both ONNX exporters see one plain tensor argument per input."""

    def __init__(self, model: torch.nn.Module, constants: dict):
        super().__init__()
        self.model = model
        self.constants = dict(constants)


def bound(model: torch.nn.Module, names: list[str], constants: dict) -> Bound:
    source = (f"def forward(self, {', '.join(names)}):\n"
              f"    return self.model({', '.join(f'{n}={n}' for n in names)}, **self.constants)\n")
    namespace: dict = {}
    exec(compile(source, f"<hewn: {type(model).__name__} called with keywords>", "exec"), namespace)
    # named as the user's class: messages say "BertModel.forward failed ..."
    cls = type(type(model).__name__, (Bound,), {"forward": namespace["forward"], "__module__": __name__})
    return cls(model, constants).eval()


def bind(module: torch.nn.Module, example_inputs: Any, example_kwargs: Any = None) -> Binding:
    """The module to capture and its tensor inputs. A plain tuple of tensors for a module without
    `use_cache` stays as it is (fx names nodes after the user's module paths); keyword inputs,
    non-tensor constants and Hugging Face's `use_cache` go through a Bound."""
    positional, keywords = _split(module, example_inputs, example_kwargs)
    params = _parameters(module)
    constants = {k: v for k, v in keywords.items() if not isinstance(v, torch.Tensor)}
    notes: dict = {}
    if "use_cache" in params and "use_cache" not in keywords:
        # A cache in the outputs cannot be an ONNX output here, and a model exported without one
        # recomputes the whole sequence on every call (what an encoder or a scorer wants).
        constants["use_cache"] = False
        notes["use_cache"] = "False: exported without a KV cache; each call takes the whole sequence"
    named = _positional_names(params, len(positional))
    if not keywords and not constants:
        return Binding(module, positional, named, notes)
    if any(n.startswith("input_") and n not in params for n in named):
        raise ConfigError(f"{type(module).__name__}.forward takes *args, so positional example_inputs cannot be "
                          f"combined with keyword inputs; give every input as a keyword (a dict)")
    tensors = {n: t for n, t in zip(named, positional)}
    tensors.update({k: v for k, v in keywords.items() if isinstance(v, torch.Tensor)})
    if not tensors:
        raise InputMismatchError("example_inputs has no tensor: give at least one input tensor")
    shown = {k: repr(v) for k, v in constants.items() if k != "use_cache"}   # use_cache has its own note
    if shown:
        notes["constants"] = shown
    if keywords:
        notes["keyword_inputs"] = [k for k, v in keywords.items() if isinstance(v, torch.Tensor)]
    return Binding(bound(module, list(tensors), constants), tuple(tensors.values()), list(tensors), notes)


def _split(module, example_inputs, example_kwargs) -> tuple[tuple, dict]:
    if example_inputs is None and example_kwargs is None:
        raise InputMismatchError(
            "a torch.nn.Module needs example_inputs: a tuple of tensors in forward()'s order, or a dict of "
            "keyword arguments, e.g. compile(model, example_inputs=(torch.randn(1, 3, 224, 224),)) or "
            "example_inputs={'input_ids': ids, 'attention_mask': mask}")
    positional, keywords = example_inputs, dict(example_kwargs or {})
    if isinstance(positional, dict):
        keywords, positional = {**positional, **keywords}, ()
    if positional is None:
        positional = ()
    if isinstance(positional, torch.Tensor):
        positional = (positional,)
    if example_kwargs is not None and not isinstance(example_kwargs, dict):
        raise InputMismatchError(f"example_kwargs must be a dict of keyword arguments, got "
                                 f"{type(example_kwargs).__name__}")
    if not isinstance(positional, (tuple, list)) or (not positional and not keywords):
        raise InputMismatchError(f"example_inputs must be a non-empty tuple of tensors or a dict of keyword "
                                 f"arguments, got {type(example_inputs).__name__}")
    for i, value in enumerate(positional):
        if not isinstance(value, torch.Tensor):
            raise InputMismatchError(f"example_inputs[{i}] is a {type(value).__name__}, not a torch.Tensor")
    params = _parameters(module)
    takes_any = any(p.kind == p.VAR_KEYWORD for p in params.values())
    for name, value in keywords.items():
        if not isinstance(name, str) or not name.isidentifier():
            raise InputMismatchError(f"keyword input {name!r} is not a Python identifier")
        if name not in params and not takes_any:
            raise InputMismatchError(f"{type(module).__name__}.forward has no argument '{name}'; "
                                     f"its arguments: {', '.join(params) or '(none)'}")
        if not isinstance(value, (torch.Tensor, *CONSTANT_TYPES)):
            raise InputMismatchError(
                f"keyword input '{name}' is a {type(value).__name__}: inputs are tensors, and other arguments "
                f"constants (bool, int, float, str, None). Nested inputs such as a KV cache (past_key_values) "
                f"cannot be exported here")
    return tuple(positional), keywords


def _parameters(module) -> dict:
    try:
        return dict(inspect.signature(module.forward).parameters)
    except (TypeError, ValueError):
        return {}


def _positional_names(params: dict, count: int) -> list[str]:
    names = [p.name for p in params.values() if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)][:count]
    return names + [f"input_{i}" for i in range(len(names), count)]
