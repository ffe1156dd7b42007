"""torch.nn.Module -> fx GraphModule -> ONNX.

Capture: `torch.fx.symbolic_trace` (module-level graph, easiest surgery for the torch-side passes),
falling back to `torch.export` (ATen-level graph), as DESIGN.md records for Hugging Face models.
A module neither can capture is refused: the ONNX exporter's own jit tracer would silently bake
in the branch that the example input took. How the module is called (positional tensors,
keywords, Hugging Face's use_cache): torch_inputs. The export and its dynamic dims: torch_export.
"""
from __future__ import annotations

import copy
import dataclasses
import inspect
import traceback
from dataclasses import dataclass
from typing import Any

import onnx
import torch

from hewn.core.errors import InputMismatchError, InvalidModelError, TraceError, VerificationError, plain
from hewn.core.ir import validate
from hewn.core.runtime import input_specs, make_session, run_all, to_feeds
from hewn.core.measure import compare
from hewn.core.torch_run import flatten_outputs
from hewn.frontends.source import Source
from hewn.frontends.torch_export import default_dims, export, fallbacks, quiet, resized, user_dims
from hewn.frontends.torch_inputs import bind
from hewn.frontends.torch_names import label_output_dims, output_dims, output_names


@dataclass
class Captured:
    module: torch.nn.Module        # a private eval-mode copy of the user's module
    graph_module: torch.fx.GraphModule
    how: str                       # "torch.fx.symbolic_trace" or "torch.export"
    example_inputs: tuple
    outputs: list                  # flattened torch outputs on example_inputs (numpy)
    fx_failure: str | None = None  # why symbolic_trace did not work, when torch.export was used
    names: list = dataclasses.field(default_factory=list)   # the ONNX input names
    notes: dict = dataclasses.field(default_factory=dict)   # how the module is called (torch_inputs)
    dims: dict = dataclasses.field(default_factory=dict)    # the export's dynamic dims {input: {dim: label}}
    output_names: list = dataclasses.field(default_factory=list)   # the ONNX output names (torch_names)
    output_dims: dict = dataclasses.field(default_factory=dict)    # {output: {dim: label}} of the export


def capture(module: torch.nn.Module, example_inputs: Any, example_kwargs: Any = None) -> Captured:
    module, unwrapped = _uncompiled(module)
    _refuse_meta(module, example_inputs)
    # a private eval-mode copy: the user's module (mode, buffers) stays untouched, and so do the
    # user's tensors (every torch call gets fresh copies: an in-place op in forward changes only those)
    binding = bind(copy.deepcopy(module).eval(), example_inputs, example_kwargs)
    private, inputs = binding.module, fresh(binding.inputs)
    if unwrapped:
        binding.notes["torch_compile"] = "the torch.compile wrapper was removed: its original module is compiled"
    result = _forward(private, inputs, binding.names)
    outputs = _numpy(result)
    named = output_names(result, module, binding.names)
    _check_deterministic(private, inputs, binding.names, outputs)
    try:
        with quiet():
            gm = _refuse_python_numbers(_trace(private, len(inputs)), private)
        return Captured(private, gm, "torch.fx.symbolic_trace", inputs, outputs, None, binding.names, binding.notes,
                        output_names=named)
    except TraceError:
        raise
    except Exception as fx_exc:
        fx_failure = plain(f"{type(fx_exc).__name__}: {fx_exc}").splitlines()[0]
        where = _where(fx_exc, private)
    try:
        with quiet():
            gm = _refuse_python_numbers(_export_module(private, inputs, binding.names), private)
        return Captured(private, gm, "torch.export", inputs, outputs, fx_failure, binding.names, binding.notes,
                        output_names=named)
    except TraceError:
        raise
    except Exception as export_exc:
        text = plain(str(export_exc)).strip()
        export_failure = text.splitlines()[0] if text else type(export_exc).__name__
        raise TraceError(
            f"cannot capture {type(module).__name__} as a graph{where}: torch.fx.symbolic_trace failed "
            f"({fx_failure}) and torch.export failed ({export_failure}). Data-dependent Python control flow "
            f"(`if x.sum() > 0`) is the usual cause: rewrite it with torch.where or export the model to ONNX "
            f"yourself and pass the .onnx file"
        ) from None


def fresh(inputs: tuple) -> tuple:
    """Copies of the tensors in `inputs`, for one torch call that may change them in place."""
    return tuple(t.clone() if isinstance(t, torch.Tensor) else t for t in inputs)


def _refuse_meta(module: torch.nn.Module, example_inputs) -> None:
    """Tensors on the 'meta' device have a shape and no values (init_empty_weights, device='meta')."""
    for name, tensor in [*module.named_parameters(), *module.named_buffers()]:
        if tensor.is_meta:
            raise InvalidModelError(
                f"{type(module).__name__}: weight '{name}' is on the 'meta' device (a shape without values, as "
                f"init_empty_weights or device='meta' create); load the model's weights before compiling it")
    values = example_inputs.values() if isinstance(example_inputs, dict) else \
        example_inputs if isinstance(example_inputs, (tuple, list)) else (example_inputs,)
    if any(isinstance(t, torch.Tensor) and t.is_meta for t in values):
        raise InputMismatchError("example_inputs holds a tensor on the 'meta' device (a shape without values); "
                                 "give real input tensors")


def _uncompiled(module):
    """(the module under a torch.compile wrapper, whether there was one): the wrapper cannot be
    traced or exported, and compiles the same forward."""
    inner = getattr(module, "_orig_mod", None)
    if type(module).__name__ == "OptimizedModule" and isinstance(inner, torch.nn.Module):
        return inner, True
    return module, False


def _check_deterministic(module: torch.nn.Module, inputs: tuple, names: list, outputs: list) -> None:
    """The same inputs twice must give the same outputs: a forward that draws random numbers or
    keeps state between calls cannot be one ONNX graph (and was blamed on the exporter)."""
    import numpy as np

    again = _run(module, inputs, names)
    worst = max((float(np.max(np.abs(a.astype(np.float64) - b.astype(np.float64)))) if a.size else 0.0
                 for a, b in zip(outputs, again) if a.shape == b.shape), default=0.0)
    if worst > 1e-5 * max(1.0, max((float(np.max(np.abs(a))) for a in outputs if a.size), default=1.0)) or \
            [a.shape for a in outputs] != [b.shape for b in again]:
        raise TraceError(
            f"{type(module).__name__} gives different outputs when run twice on the same example_inputs (max "
            f"difference {worst:.3g}): its forward draws random numbers (torch.rand/randn/bernoulli, dropout "
            f"called with training=True) or keeps state between calls (a buffer or attribute it updates). One "
            f"ONNX graph cannot compute that; make forward deterministic (noise as an input or a fixed buffer) "
            f"and compile again")


def _trace(module: torch.nn.Module, count: int) -> torch.fx.GraphModule:
    """torch.fx.symbolic_trace, recording where each node comes from (for the messages below).
    forward()'s arguments after the `count` given in example_inputs are bound to their defaults
    (fx `concrete_args`): traced as proxies, `if scale is not None:` took the branch the user did
    not ask for."""
    tracer = torch.fx.Tracer()
    tracer.record_stack_traces = True
    graph = tracer.trace(module, concrete_args=unused_defaults(module, count) or None)
    return torch.fx.GraphModule(tracer.root, graph, type(module).__name__)


def unused_defaults(module: torch.nn.Module, count: int) -> dict:
    """forward()'s parameters after the first `count`, with their default values."""
    try:
        params = list(inspect.signature(module.forward).parameters.values())
    except (TypeError, ValueError):
        return {}
    return {p.name: p.default for p in params[count:]
            if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.default is not p.empty}


def _refuse_python_numbers(gm: torch.fx.GraphModule, module: torch.nn.Module) -> torch.fx.GraphModule:
    """A graph that turns a traced tensor into a Python number (`.item()`, `.tolist()`, `int(x)`) is
    refused: the ONNX exporter would keep the example's value as a constant."""
    for node in gm.graph.nodes:
        target = node.target if isinstance(node.target, str) else getattr(node.target, "__name__", str(node.target))
        if (node.op == "call_method" and target in TO_PYTHON) or \
                (node.op == "call_function" and (node.target in (int, float, bool) or target in ATEN_TO_PYTHON)):
            what = target.split(".")[0] if target in ATEN_TO_PYTHON else target
            raise TraceError(
                f"{type(module).__name__} calls .{what}() on a traced tensor{_source_line(node)}: that turns it into "
                f"a Python number, and the ONNX export would keep the example's value as a constant (wrong on "
                f"every other input). Keep it a tensor (e.g. x / x.abs().max() instead of .item())")
    return gm


TO_PYTHON = ("item", "tolist", "__int__", "__float__", "__bool__", "__index__")
ATEN_TO_PYTHON = ("item.default", "_local_scalar_dense.default")  # the same in a torch.export graph


def _source_line(node) -> str:
    """' at model.py:12 (return x / x.abs().max().item())': the innermost frame outside torch."""
    trace = (node.stack_trace or node.meta.get("stack_trace") or "").strip().splitlines()
    for i in range(len(trace) - 1, -1, -1):
        line = trace[i].strip()
        if line.startswith("File ") and "/torch/" not in line:
            where = line.split('"')[1].rsplit("/", 1)[-1] + ":" + line.split("line ")[1].split(",")[0]
            code = trace[i + 1].strip() if i + 1 < len(trace) and not trace[i + 1].strip().startswith("File ") else ""
            return f" at {where} ({code})" if code else f" at {where}"
    return ""


def _export_module(module: torch.nn.Module, inputs: tuple, names: list) -> torch.fx.GraphModule:
    """torch.export with the default dynamic dims (batch, and sequence for token inputs: the torch
    steps' result is exported from this graph, and fine-tuning feeds other sizes), traced on the
    example grown along them because torch.export specializes dims of size 1; batch only, then a
    static export, when the module does not allow that."""
    for dims in fallbacks(default_dims(names, inputs))[:-1]:   # the last, static, is the plain export below
        # DYNAMIC: torch.export infers the range (position tables bound the sequence)
        shapes = tuple({d: torch.export.Dim.DYNAMIC for d in dims.get(n, {})} or None for n in names)
        try:
            return torch.export.export(module, fresh(resized(inputs, names, dims)), dynamic_shapes=shapes).module()
        except Exception:
            pass
    return torch.export.export(module, fresh(inputs)).module()


def _run(module: torch.nn.Module, inputs: tuple, names: list | None = None) -> list:
    return _numpy(_forward(module, inputs, names))


def _numpy(result) -> list:
    return [t.detach().cpu().numpy() for t in flatten_outputs(result)]


def _forward(module: torch.nn.Module, inputs: tuple, names: list | None = None):
    try:
        with torch.no_grad():
            return module(*fresh(inputs))
    except Exception as exc:
        shapes = ", ".join(f"{n + ' ' if n else ''}{tuple(t.shape)} {t.dtype}"
                           for n, t in zip(names or [""] * len(inputs), inputs))
        raise InputMismatchError(
            f"{type(module).__name__}.forward failed on example_inputs [{shapes}]: "
            f"{type(exc).__name__}: {plain(str(exc)).splitlines()[0] if str(exc).strip() else ''}"
        ) from None


def _where(exc: BaseException, root: torch.nn.Module) -> str:
    """' in module 'layer1.0' (Block.forward, line 42)' for the deepest user-module frame."""
    names = {id(m): name for name, m in root.named_modules()}
    found = ""
    for frame, lineno in traceback.walk_tb(exc.__traceback__):
        owner = frame.f_locals.get("self")
        if isinstance(owner, torch.nn.Module) and id(owner) in names:
            name = names[id(owner)] or "<root>"
            found = f" in module '{name}' ({type(owner).__name__}.{frame.f_code.co_name}, line {lineno})"
    return found


def export_onnx(captured: Captured, opset: int, dims: dict | None = None) -> onnx.ModelProto:
    return export_with(captured, opset, dims)[0]


def export_with(captured: Captured, opset: int, dims: dict | None = None) -> tuple[onnx.ModelProto, str, str | None]:
    """(model, exporter, why not TorchScript). Exports the fx graph when symbolic_trace made one (later
    torch-side passes edit it); the torch.export graph is ATen-level and proves the module static,
    so then the module itself is exported."""
    source = captured.graph_module if captured.how == "torch.fx.symbolic_trace" else captured.module
    outputs = captured.output_names or \
        ([f"output_{i}" for i in range(len(captured.outputs))] if len(captured.outputs) > 1 else ["output"])
    return export(source, fresh(captured.example_inputs), captured.names, outputs, opset, dims or {},
                  type(captured.module).__name__)   # a Bound is named after the user's class


def load(model: torch.nn.Module, example_inputs, profile, example_kwargs=None, dynamic_shapes=None) -> Source:
    """Capture the module, export it at the target's opset (17 where allowed) with dynamic batch and
    sequence dims where the model allows them, and check the export against the module."""
    captured = capture(model, example_inputs, example_kwargs)
    opset = min(max(17, profile.opset_range[0]), profile.opset_range[1])
    if dynamic_shapes is None:
        wanted = default_dims(captured.names, captured.example_inputs) if profile.dynamic_inputs else {}
    else:
        wanted = user_dims(dynamic_shapes, captured.names, captured.example_inputs)
    exported, exporter, why, dims, check = export_checked(captured, opset, wanted, dynamic_shapes)
    info = {"kind": "torch", "module": type(model).__name__, "capture": captured.how, "exporter": exporter,
            "opset": opset, "inputs": captured.names, "outputs": list(captured.output_names),
            "dynamic_dims": {k: dict(v) for k, v in dims.items()}}
    if why:
        info["torchscript_exporter_failure"] = why
    if captured.fx_failure:
        info["fx_symbolic_trace_failure"] = captured.fx_failure
    info.update(captured.notes)
    info["export_check"] = check
    captured.dims = dims  # export_planned keeps them
    return Source(exported, info, None, captured)


def export_checked(captured: Captured, opset: int, wanted: dict, asked) -> tuple:
    """The export with the most dynamic dims that reproduces the module at a second size: the
    wanted dims, then batch only, then static. A dim the user named explicitly must hold."""
    failures = []
    for dims in fallbacks(wanted):
        exported, exporter, why = export_with(captured, opset, dims)
        validate(exported, f"the ONNX export of {type(captured.module).__name__}")
        session = make_session(exported)
        check = check_export(exported, captured, session)
        if not dims:
            break
        other = resized(captured.example_inputs, captured.names, dims)
        failure, shapes = check_size(exported, captured, other, session)
        if failure is None:
            check["second_size"] = {n: list(t.shape) for n, t in zip(captured.names, other)}
            captured.output_dims = output_dims(captured.example_inputs, other, captured.names, dims,
                                               [o.shape for o in captured.outputs], shapes, captured.output_names)
            label_output_dims(exported, captured.output_dims)
            break
        failures.append(failure)
        if isinstance(asked, dict):
            raise VerificationError(f"dynamic_shapes={asked!r}: {failure}; leave those dims static")
    if failures:
        check["dynamic_dims_refused"] = failures[0]
    return exported, exporter, why, dims, check


def check_size(exported: onnx.ModelProto, captured: Captured, other: tuple, session) -> tuple[str | None, list]:
    """(why the export (run by `session`) is wrong at the other size, None when it matches the module
    there; the module's output shapes there)."""
    shapes = ", ".join(f"{n} {list(t.shape)}" for n, t in zip(captured.names, other))
    try:
        expected = _run(captured.module, other, captured.names)
    except InputMismatchError as exc:
        return f"the torch module itself does not run at another size ({shapes}): {exc}", []
    try:
        specs = input_specs(exported)
        got = run_all(session, [to_feeds(other, specs, "resized example_inputs")])
    except Exception as exc:
        return f"the export fails at another size ({shapes}): {str(exc).strip().splitlines()[0][:200]}", []
    cmp = compare([expected], got, rtol=1e-3, atol=1e-4)
    why = None if cmp.passed else f"the export differs from the module at another size ({shapes}), " \
                                  f"max abs error {cmp.max_abs:.3g}: a size of the example is baked in"
    return why, [e.shape for e in expected]


def check_export(exported: onnx.ModelProto, captured: Captured, session=None) -> dict:
    """The exported ONNX vs. the torch module on example_inputs, and on a perturbed copy of them:
    an export that is right only on the example has baked a value of it in (a tensor turned into
    a Python number, a branch on data) and would be silently wrong on real inputs."""
    specs = input_specs(exported)
    session = session or make_session(exported)
    feeds = [to_feeds(captured.example_inputs, specs, "example_inputs")]
    outputs = run_all(session, feeds)
    if len(outputs[0]) != len(captured.outputs):
        return {"passed": False, "why": f"{len(outputs[0])} ONNX outputs vs {len(captured.outputs)} torch outputs"}
    cmp = compare([captured.outputs], outputs, rtol=1e-3, atol=1e-4)
    if not cmp.passed:
        raise VerificationError(
            f"the ONNX export does not reproduce the torch module (max abs error {cmp.max_abs:.3g}); "
            f"this is a torch.onnx.export problem with this module, not a hewn pass"
        )
    other = perturbed(captured.example_inputs)
    expected = _run(captured.module, other, captured.names)
    moved = compare([expected], run_all(session, [to_feeds(other, specs, "perturbed example_inputs")]),
                    rtol=1e-3, atol=1e-4)
    if not moved.passed:
        raise VerificationError(
            f"the ONNX export of {type(captured.module).__name__} matches it on example_inputs but not on other "
            f"inputs (max abs error {moved.max_abs:.3g}): a value of the example was baked into the graph, e.g. by "
            f".item()/int()/float() on a tensor or by Python control flow on tensor values. Keep such values "
            f"tensors (torch.where for branches), or export the model to ONNX yourself")
    return {**cmp.as_dict(), "perturbed_inputs": moved.as_dict()}


def perturbed(inputs: tuple) -> tuple:
    """Other inputs of the same kind: floats moved by half their spread. Integers (token ids,
    attention masks, class ids) keep the example's values: their structure (a right-padded mask)
    is part of what the model and ORT's fusions assume, and no guess preserves it."""
    gen = torch.Generator().manual_seed(1)
    out = []
    for t in inputs:
        if t.is_floating_point():
            spread = float(t.std()) if t.numel() > 1 and float(t.std()) > 0 else 1.0
            out.append(t + 0.5 * spread * torch.randn(t.shape, generator=gen, dtype=t.dtype))
        else:
            out.append(t)
    return tuple(out)


def export_planned(captured: Captured, module, opset: int) -> onnx.ModelProto:
    """The ONNX export of `module`, the torch-side steps' result for `captured`, with the dims the
    original's export kept dynamic."""
    exported = export_onnx(dataclasses.replace(captured, graph_module=module, how="torch.fx.symbolic_trace"),
                           opset, captured.dims)
    label_output_dims(exported, captured.output_dims)
    validate(exported, "the ONNX export of the planned model")
    return exported

