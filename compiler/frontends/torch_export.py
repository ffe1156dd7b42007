"""The ONNX export of a captured module: which dims stay dynamic, which exporter ran.

Exporters: the TorchScript-based `torch.onnx.export(dynamo=False)` first (measured here, torch
2.13: 0.13 s vs 3.2 s for the dynamo exporter on a small CNN; it honours `opset_version` and names
nodes after module paths, which the report shows users), then the dynamo exporter when the first
fails (e.g. an aten op without a TorchScript conversion). Both run with the process's stdout and
stderr captured: the TorchScript exporter prints its whole IR on some failures.

Dynamic dims: batch (dim 0 of every input) and sequence (dim 1 of integer inputs of rank 2, i.e.
token ids and masks), unless the user says otherwise with dynamic_shapes=. Each dynamic dim is
checked: the export runs at another size and must match the module there; a dim that does not
(a reshape baked to the example's batch) is exported static and the report says why.
"""
from __future__ import annotations

import contextlib
import os
import re
import sys
import tempfile
import warnings
from pathlib import Path

import onnx
import torch

from hewn.core.errors import ConfigError, TraceError, plain

TORCHSCRIPT = "torch.onnx.export(dynamo=False)"
DYNAMO = "torch.onnx.export(dynamo=True)"


def default_dims(names: list[str], inputs: tuple) -> dict:
    """{input name: {dim: label}}: batch for every input with a dim, sequence for token inputs."""
    dims = {}
    for name, t in zip(names, inputs):
        if t.dim() == 0:
            continue
        dims[name] = {0: "batch"}
        if t.dim() == 2 and not t.is_floating_point() and t.dtype != torch.bool:
            dims[name][1] = "sequence"
    return dims


def user_dims(dynamic_shapes, names: list[str], inputs: tuple) -> dict:
    """dynamic_shapes=True (the default dims), False (static) or {input: {dim: label}}."""
    if dynamic_shapes is True:
        return default_dims(names, inputs)
    if dynamic_shapes is False:
        return {}
    if not isinstance(dynamic_shapes, dict):
        raise ConfigError(f"dynamic_shapes= takes True, False or a dict {{input name: {{dim: label}}}}, "
                          f"got {type(dynamic_shapes).__name__}")
    ranks = dict(zip(names, (t.dim() for t in inputs)))
    dims = {}
    for name, spec in dynamic_shapes.items():
        if name not in ranks:
            raise ConfigError(f"dynamic_shapes names input '{name}'; the inputs are {', '.join(names)}")
        spec = {d: f"{name}_{d}" for d in spec} if isinstance(spec, (list, tuple)) else spec
        if not isinstance(spec, dict) or any(not isinstance(d, int) or not 0 <= d < ranks[name] for d in spec):
            raise ConfigError(f"dynamic_shapes['{name}'] takes dims 0..{ranks[name] - 1} "
                              f"(a list, or a dict dim -> label), got {spec!r}")
        dims[name] = {int(d): str(label) for d, label in spec.items()}
    return dims


def fallbacks(wanted: dict) -> list[dict]:
    """The dims to try, most dynamic first: `wanted`, then batch (dim 0) only, then static ({}),
    each once."""
    tries = [wanted, {k: {d: v[d] for d in v if d == 0} for k, v in wanted.items()}, {}]
    tries = [{k: v for k, v in dims.items() if v} for dims in tries]
    return [d for i, d in enumerate(tries) if d not in tries[:i]]


def resized(inputs: tuple, names: list[str], dims: dict) -> tuple:
    """The inputs at another size along every dynamic dim (grown by half, at least by one), made
    of the example's own values: the batch repeats whole samples, other dims repeat their last
    slice, so a right-padded attention mask stays right-padded (ORT's attention kernels take
    masks as per-row lengths) and token ids stay in the vocabulary."""
    out = []
    for name, t in zip(names, inputs):
        for d in sorted(dims.get(name, {})):
            size = t.shape[d]
            if size == 0:
                continue
            extra = max(1, size // 2)
            if d == 0:
                t = torch.cat([t] * (-(-extra // size) + 1), dim=0).narrow(0, 0, size + extra)
            else:
                t = torch.cat([t, t.narrow(d, size - 1, 1).repeat_interleave(extra, dim=d)], dim=d)
        out.append(t)
    return tuple(out)


def export(source, inputs: tuple, names: list[str], outputs: list[str], opset: int, dims: dict,
           what: str) -> tuple[onnx.ModelProto, str, str | None]:
    """(model, the exporter that made it, why the TorchScript exporter was not used)."""
    try:
        return _torchscript(source, inputs, names, outputs, opset, dims), TORCHSCRIPT, None
    except Exception as exc:
        first = _first_line(exc)
    try:  # traced at a size > 1 along the dynamic dims: torch.export specializes dims of size 1
        return _dynamo(source, resized(inputs, names, dims), names, outputs, opset, dims), DYNAMO, first
    except Exception as exc:
        second = _first_line(exc)
    op = re.search(r"'?(aten::\w+|prim::\w+)'?", first)
    hint = (f"{op.group(1)} has no ONNX conversion at opset {opset}: express that step with other torch ops"
            if op else "simplify the failing step")
    raise TraceError(f"cannot export {what} to ONNX: the TorchScript exporter failed ({first}) and the dynamo "
                     f"exporter failed ({second}); {hint}, or export the model yourself and pass the .onnx file")


def _torchscript(source, inputs, names, outputs, opset, dims) -> onnx.ModelProto:
    with tempfile.TemporaryDirectory(prefix="hewn-export-") as tmp, quiet():
        path = Path(tmp) / "model.onnx"
        torch.onnx.export(source, inputs, str(path), dynamo=False, opset_version=opset, input_names=names,
                          output_names=outputs, do_constant_folding=True, dynamic_axes=dims or None)
        return onnx.load(str(path))


def _dynamo(source, inputs, names, outputs, opset, dims) -> onnx.ModelProto:
    """The dynamo exporter; it emits opset 18 at least (fit_opset takes it from there)."""
    shapes = tuple({d: torch.export.Dim.DYNAMIC for d in dims.get(n, {})} or None for n in names)
    with quiet():
        program = torch.onnx.export(source, inputs, dynamo=True, opset_version=max(opset, 18),
                                    input_names=names, output_names=outputs, verbose=False,
                                    dynamic_shapes=shapes if dims else None, optimize=True)
    model = program.model_proto
    for value in model.graph.input:      # the labels the user reads, as the TorchScript exporter writes
        for d, label in dims.get(value.name, {}).items():
            dim = value.type.tensor_type.shape.dim[d]
            if not dim.HasField("dim_value"):
                dim.dim_param = label
    return model


@contextlib.contextmanager
def quiet():
    """Both exporters print (IR dumps, dynamo's progress lines) to the process's fds; keep them
    off the user's terminal. Warnings are silenced too: they are about the export, not the model."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    with tempfile.TemporaryFile() as sink, open(os.devnull, "w") as devnull, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            os.dup2(sink.fileno(), 1)
            os.dup2(sink.fileno(), 2)
            with contextlib.redirect_stdout(devnull), contextlib.redirect_stderr(devnull):
                yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])


def _first_line(exc: BaseException) -> str:
    text = plain(str(exc)).strip()   # the exporters colour their messages for a terminal
    line = text.splitlines()[0] if text else ""
    return f"{type(exc).__name__}: {line[:300]}"
