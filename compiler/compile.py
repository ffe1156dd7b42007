"""compile(): frontend -> passes -> target -> emit -> verify (DESIGN.md)."""
from __future__ import annotations

import dataclasses
import os
import sys
import time
from pathlib import Path
from typing import Optional, Sequence

import onnx
import onnxruntime as ort

from .errors import ConfigError, HewnError, InputMismatchError, UnsupportedModelError, VerificationError
from .external import external_bytes
from .instruments import DumpIR, Provenance, Timing, Verify
from .ir import default_opset, load_model, to_graph, to_model, upgrade_opset, validate
from .manager import FixedPoint, PassManager
from .pass_infra import Context, Reference
from .pipeline import build_pipeline
from .runtime import (compare, input_specs, integer_bounds, make_session, output_error, run_all, seeded_inputs,
                      time_interleaved, to_feeds)
from .storage import json_text, save_model, save_ort, save_text

VERIFY_SAMPLES = 2       # seeded inputs when the user gives none
MAX_USER_SAMPLES = 8     # of calib_data used for verification


class CompiledModel:
    """The result of compile(): `.onnx` (ModelProto), `.report` (dict), `.save(path)`, `.session()`."""

    def __init__(self, model: onnx.ModelProto, report: dict, source_path: Optional[Path] = None):
        self.onnx = model
        self.report = report
        self._source_path = source_path

    def save(self, path: str | os.PathLike) -> Path:
        """Atomically writes the model (external data when > 2 GB; ORT format for a `.ort` path)
        and `<name>.report.json` and `<name>.report.html` beside it."""
        from .report_html import render

        protect = (self._source_path,) if self._source_path else ()
        # everything that can fail before writing is done first; a failure or Ctrl-C while writing
        # removes what was already written, so the folder never holds a model without its report
        report_text, page = json_text(self.report), render(self.report, Path(path).name)
        written: list[Path] = []
        try:
            if Path(path).suffix == ".ort":
                path = save_ort(self.onnx, path, protect=protect)
            else:
                path = save_model(self.onnx, path, protect=protect)
            written += [path, path.with_name(path.name + ".data")]
            written.append(save_text(report_text, report_path(path)))
            written.append(save_text(page, html_path(path)))
        except BaseException:
            for item in written:
                Path(item).unlink(missing_ok=True)
            raise
        return path

    def session(self, providers: Sequence[str] = ("CPUExecutionProvider",), threads: int = 0) -> ort.InferenceSession:
        return make_session(self.onnx, providers=providers, threads=threads)


def report_path(model_path: str | os.PathLike) -> Path:
    model_path = Path(model_path)
    return model_path.with_name(model_path.stem + ".report.json")


def html_path(model_path: str | os.PathLike) -> Path:
    model_path = Path(model_path)
    return model_path.with_name(model_path.stem + ".report.html")


def write_html(report: dict, model_path: str | os.PathLike) -> Path:
    from .report_html import render

    return save_text(render(report, Path(model_path).name), html_path(model_path))


def compile(model, target="cpu", *, example_inputs=None, calib_data=None, train_data=None, distill=None,
            eval_data=None, metric=None, prune=None, quantize=None, accuracy_budget=None, plan=None,
            sparsity=None, passes=None, output=None, measure_latency=True, on_error="raise") -> CompiledModel:
    """Optimize `model` (nn.Module + example_inputs, or an ONNX path / ModelProto) for `target`.

    accuracy_budget= turns the planner on: per-layer prune ratio and SVD rank chosen from a
    sensitivity table, then int8 where it fits, all under one budget (1 - output cosine, or
    the drop of `metric(outputs over eval_data)` when given). sparsity= zeroes single weights: a share
    (unstructured, stored as sparse initializers where that is smaller) or "2:4" (sparse tensor
    cores). train_data= (torch models) fine-tunes
    the compressed model against the original by distillation (DistillConfig via distill=).
    on_error="skip" goes on without a pass that fails (its changes undone, the failure in
    report["skipped_passes"]); "raise" (the default) stops with a PassError naming it.
    Returns a CompiledModel; with `output=` it is also saved there (atomically). The input model,
    object or file, is never modified.
    """
    from targets import get_target

    started = time.perf_counter()
    profile = get_target(target)
    if on_error not in ("raise", "skip"):
        raise ConfigError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
    planning = accuracy_budget is not None and prune is None and passes is None
    prune_config = _prune_config(prune)
    plan_config = _plan_config(plan, planning)
    quant_config = _quant_config(quantize, calib_data, accuracy_budget, planning)
    sparsify_step = _sparsity_step(sparsity)
    _check_training_args(model, train_data, distill, metric, eval_data, planning, prune_config)
    original, frontend, source_path, captured = _frontend(model, example_inputs, profile)
    reference = _reference(original, example_inputs if frontend["kind"] == "onnx" else None, calib_data, frontend)
    structure_report, working_source = None, original
    if captured is not None and (planning or (prune_config is not None and train_data is not None)):
        working_source, structure_report = _torch_structure(
            captured, profile, original, planning=planning, plan_config=plan_config, prune_config=prune_config,
            budget=accuracy_budget, quantizing=quant_config is not None, calib_data=calib_data, eval_data=eval_data,
            metric=metric, train_data=train_data, distill_config=distill)
        prune_config = None  # done on the torch side
    steps = passes if passes is not None else _with_pruning(profile.pipeline, prune_config, calib_data is not None)
    if planning and captured is None:
        steps = [*steps, _onnx_planner(plan_config, accuracy_budget, quant_config is not None, original, eval_data,
                                       metric), profile.pipeline[0]]
    if sparsify_step is not None and passes is None:
        steps = [*steps, sparsify_step]
    if quant_config is not None and passes is None:
        steps = [*steps, ("quantize", dataclasses.asdict(quant_config))]
    if passes is None:
        steps = [*steps, *profile.finish]
    pipeline = build_pipeline(steps, profile.pass_configs)
    working = _fit_opset(working_source, profile, frontend, _needed_opset(pipeline))

    from passes import CostModel

    ir_version = max(working.ir_version, 7)
    before = Context(profile, ir_version=ir_version).analysis(CostModel, to_graph(original)).summary()
    graph = to_graph(working)
    ctx = Context(profile, seed=0, reference=reference, ir_version=ir_version,
                  calibration=_calibration(calib_data, original))
    start = None
    if structure_report is not None:  # the torch side already changed the model: later passes compare to it
        start = run_all(make_session(working), reference.feeds)
        ctx.measurements.append({"pass": "torch_structure", **output_error(reference.outputs, start)})
    records, timing = _run_passes(graph, ctx, pipeline, profile, start, on_error)
    graph.cleanup().toposort()
    emitted = to_model(graph, ir_version=ctx.ir_version, provenance=ctx.provenance)
    ctx.invalidate()
    after = ctx.analysis(CostModel, graph).summary()
    storage = None
    if sparsify_step is not None and sparsify_step[1]["pattern"] == "unstructured":
        from .sparse_storage import store_sparse

        emitted, storage = store_sparse(emitted)
    lossy = (["torch_structure"] if structure_report is not None else []) + \
        [r.name for r in records if r.modified and not r.lossless and not r.error]
    verification = _verify(emitted, reference, profile, lossy)

    report = {
        "hewn_version": emitted.producer_version,
        "target": profile.as_dict(),
        "frontend": frontend,
        "before": before,
        "after": after,
        "passes": [r.as_dict() for r in records],
        "pass_seconds": {k: round(v, 4) for k, v in timing.seconds.items()},
        "left_intact": ctx.notes,
        "lossy_passes": ctx.measurements,
        "verification": verification,
        "compile_seconds": round(time.perf_counter() - started, 3),
        "runtime_options": dict(profile.session_options),
    }
    skipped = [{"pass": r.name, "error": r.error, "after": [p.name for p in records[:i] if not p.error]}
               for i, r in enumerate(records) if r.error]
    if skipped:
        report["skipped_passes"] = skipped
    if storage is not None:
        report["sparse_storage"] = storage
    report["file_bytes"] = {"before": original.ByteSize() + external_bytes(original),
                            "after": emitted.ByteSize() + external_bytes(emitted)}
    if profile.quant_timed and measure_latency:  # this machine runs the target's runtime: time it
        report["latency"] = _latency(original, emitted, reference.feeds[0])
    for key, pass_name in (("pruning", "prune_channels"), ("quantization", "quantize"), ("plan", "plan_structure"),
                           ("sparsity", "sparsify"), ("fusion", "fuse_transformer"), ("attention", "fuse_attention"),
                           ("float16", "float16"), ("op_support", "check_op_support"), ("static_shapes", "static_shapes")):
        stats = next((r.stats for r in records if r.name == pass_name), None)
        if stats is not None:
            report[key] = stats
    if structure_report is not None:
        report.update(structure_report)
    if planning:
        report["plan"] = {**report.get("plan", {}), "final": _final_check(emitted, original, accuracy_budget,
                                                                            reference, eval_data, metric)}
    result = CompiledModel(emitted, report, source_path)
    if output is not None:
        result.save(output)
    return result


LATENCY_RUNS = 20


def _latency(original: onnx.ModelProto, compiled: onnx.ModelProto, feed: dict) -> dict:
    """Median batch-1 latency of both models in ORT on this machine, timed interleaved."""
    sessions = [make_session(original, threads=2), make_session(compiled, threads=2)]
    # big models: fewer runs within 3 s, not a long compile
    (before, after), runs = time_interleaved(sessions, feed, LATENCY_RUNS, warmup=1, budget_s=3.0)
    return {"before_ms": round(before * 1e3, 4), "after_ms": round(after * 1e3, 4),
            "speedup": round(before / after, 3), "runs": runs,
            "how": "ORT CPU EP, 2 threads, batch of the first verification input, median, interleaved (<= 3 s)"}


def _sparsity_step(sparsity):
    """sparsity=0.8: unstructured (80% of each large weight zeroed); "2:4": semi-structured."""
    if sparsity is None:
        return None
    if sparsity == "2:4":
        return ("sparsify", {"pattern": "2:4"})
    if isinstance(sparsity, (int, float)) and not isinstance(sparsity, bool) and 0 < sparsity < 1:
        return ("sparsify", {"pattern": "unstructured", "sparsity": float(sparsity)})
    raise ConfigError(f"sparsity= takes a share in (0, 1) (unstructured) or '2:4', got {sparsity!r}")


def _check_training_args(model, train_data, distill, metric, eval_data, planning, prune_config) -> None:
    if distill is not None:
        from .distill import DistillConfig  # imports torch: only when asked for
    if distill is not None and not isinstance(distill, DistillConfig):
        raise ConfigError(f"distill= takes a DistillConfig, got {type(distill).__name__}")
    if distill is not None and train_data is None:
        raise ConfigError("distill= configures fine-tuning on train_data=; give train_data too")
    if metric is not None and (eval_data is None or not callable(metric)):
        raise ConfigError("metric= is a function metric(outputs) -> float (higher is better) over the outputs "
                          "on eval_data=; give both")
    if train_data is None:
        return
    torch = sys.modules.get("torch")
    if torch is None or not isinstance(model, torch.nn.Module):
        raise ConfigError("train_data= fine-tunes a torch model; an ONNX model cannot be trained here. "
                          "Pass the torch.nn.Module with example_inputs=")
    if not planning and prune_config is None:
        raise ConfigError("train_data= fine-tunes a compressed model: give accuracy_budget= (the planner) "
                          "or prune= as well")


def _plan_config(plan, planning):
    from passes.planner import PlanConfig

    if plan is None:
        return PlanConfig()
    if not isinstance(plan, PlanConfig):
        raise ConfigError(f"plan= takes a passes.planner.PlanConfig, got {type(plan).__name__}")
    if not planning:
        raise ConfigError("plan= configures the planner, which runs with accuracy_budget= (and without prune=)")
    plan.check()
    return plan


def _budget(accuracy_budget) -> float:
    if not isinstance(accuracy_budget, (int, float)) or isinstance(accuracy_budget, bool) \
            or not 0 <= accuracy_budget < 1:
        raise ConfigError(f"accuracy_budget= takes a float in [0, 1), got {accuracy_budget!r}")
    return float(accuracy_budget)


INT8_SHARE_FLOOR = 0.25   # structure keeps at least this share of the budget
INT8_MARGIN = 3.0         # int8's error on a compressed model grows; reserve this multiple of its cost


def _structure_budget(budget: float, config, quantizing: bool, probe=None) -> tuple[float, dict]:
    """The part of the budget the structure plan may spend: all of it without int8; with int8, a
    fixed share when configured, else the budget less what int8 measurably costs on the original
    (probe() -> int8's output error, or None when int8 does not fit at all)."""
    if not quantizing:
        return budget, {"structure_budget_from": "no int8 follows"}
    if config.structure_share is not None or probe is None:
        share = config.structure_share if config.structure_share is not None else 0.5
        return budget * share, {"structure_budget_from": f"structure_share {share}"}
    cost = probe()
    if cost is None:
        return budget * 0.5, {"structure_budget_from": "int8 probe found no int8 within budget; half"}
    left = max(budget * INT8_SHARE_FLOOR, budget - max(INT8_MARGIN * cost, 0.1 * budget))
    return left, {"structure_budget_from": "int8 probe", "int8_probe_error": round(cost, 6)}


def _int8_probe(original, profile, calib_data, budget):
    """Compile the original with int8 alone (no timing) and return its output error."""
    from passes.quantize import QuantizeConfig

    def probe():
        result = compile(original, profile, calib_data=calib_data, measure_latency=False,
                         quantize=QuantizeConfig(budget=budget, measure_speed=False))
        chosen = result.report.get("quantization", {}).get("chosen")
        return None if not chosen else max(0.0, 1.0 - chosen["mean_cosine"])
    return probe


def _torch_structure(captured, profile, original, *, planning, plan_config, prune_config, budget, quantizing,
                     calib_data, eval_data, metric, train_data, distill_config):
    """Plan (or prune) and fine-tune on the torch side; returns (the ONNX export of the result, report)."""
    from . import frontend_torch
    from .plan_torch import feeds_as_tuples, plan_torch

    specs = input_specs(original)
    if planning:
        calib = feeds_as_tuples(_samples(calib_data) if calib_data is not None else [captured.example_inputs], specs)
        evals = feeds_as_tuples(_samples(eval_data), specs) if eval_data is not None else calib
        structure_budget, how = _structure_budget(_budget(budget), plan_config, quantizing,
                                                  _int8_probe(original, profile, calib_data, _budget(budget)))
        planned, report = plan_torch(captured, budget=_budget(budget), config=plan_config,
                                     round_to=profile.channel_multiple, calib=calib, eval_feeds=evals, metric=metric,
                                     train_data=train_data, distill_config=distill_config,
                                     structure_budget=structure_budget)
        report.update(how)
        out = {"plan": report}
    else:
        from passes.fx_channels import prune_torch
        from passes.plan_backends import run_torch, torch_feeds

        from .distill import DistillConfig, distill

        planned, stats = prune_torch(captured.module, captured.example_inputs, prune_config,
                                     round_to=profile.channel_multiple)
        # held-out agreement with the original before and after, so the report shows what training won back
        held_out_from, source = ("eval_data", eval_data) if eval_data is not None else ("calib_data", calib_data)
        if source is None:
            held_out_from, source = "example_inputs", [tuple(t.numpy() for t in captured.example_inputs)]
        held_out = torch_feeds(feeds_as_tuples(_samples(source), specs))
        reference = run_torch(captured.module, held_out)
        before = output_error(reference, run_torch(planned, held_out))
        log = distill(planned, captured.module, train_data, distill_config or DistillConfig(),
                      captured.example_inputs)
        after = output_error(reference, run_torch(planned, held_out))
        log.update({"cosine_before": round(before["mean_cosine"], 5), "cosine_after": round(after["mean_cosine"], 5),
                    "held_out": held_out_from})
        out = {"pruning": stats, "distill": log}
    opset = default_opset(original)
    exported = frontend_torch.export_onnx(dataclasses.replace(captured, graph_module=planned,
                                                              how="torch.fx.symbolic_trace"), opset)
    validate(exported, "the ONNX export of the planned model")
    return exported, out


def _samples(data) -> list:
    source = data() if callable(data) else data
    if not hasattr(source, "__iter__") or isinstance(source, (str, bytes)):
        raise InputMismatchError(f"expected a list of input samples, got {type(data).__name__}")
    return list(source)


def _onnx_planner(plan_config, budget, quantizing, original, eval_data, metric):
    from passes.plan_structure import PlanStructure, PlanStructureConfig

    evals = None
    if eval_data is not None:
        specs = input_specs(original)
        evals = tuple(to_feeds(s, specs, f"eval_data[{i}]") for i, s in enumerate(_samples(eval_data)))
    return PlanStructure(PlanStructureConfig(budget=_structure_budget(_budget(budget), plan_config, quantizing)[0],
                                             plan=plan_config, eval_feeds=evals, metric=metric))


def _final_check(model, original, budget, reference, eval_data, metric) -> dict:
    """The compiled model against the original on held-out data (eval_data, else the verification
    inputs): the error the budget is about, and a statement when it was missed."""
    from .plan_torch import statement

    if eval_data is not None:
        specs = input_specs(original)
        feeds = [to_feeds(s, specs, f"eval_data[{i}]") for i, s in enumerate(_samples(eval_data))]
        ref = run_all(make_session(original), feeds)
    else:
        feeds, ref = reference.feeds, reference.outputs
    outs = run_all(make_session(model), feeds)
    err = output_error(ref, outs)
    result = {"samples": len(feeds), "cosine": round(err.get("mean_cosine", 0.0), 6)}
    if metric is not None:
        result.update({"metric_original": float(metric(ref)), "metric": float(metric(outs))})
        result["error"] = round(max(0.0, result["metric_original"] - result["metric"]), 6)
    else:
        result["error"] = round(max(0.0, 1 - err.get("mean_cosine", 0.0)), 6)
    result["budget"] = budget
    result["budget_met"] = result["error"] <= budget + 1e-12
    text = statement(budget, result["error"])
    if text:
        result["statement"] = text
    return result


def _quant_config(quantize, calib_data, accuracy_budget, planning=False):
    """quantize=None: quantize when calib_data is given. True needs calib_data. A QuantizeConfig
    says everything else; accuracy_budget= is its output-error budget (mean cosine >= 1 - budget)."""
    from passes.quantize import QuantizeConfig

    if quantize is None:
        quantize = calib_data is not None
    if quantize is False:
        if accuracy_budget is not None and not planning:
            raise ConfigError("accuracy_budget= with prune= applies to quantization; "
                              "it has no effect with quantize=False")
        return None
    if calib_data is None:
        raise ConfigError("quantize= needs calib_data=: a list of input samples (100-1000 real, "
                          "representative inputs) to measure activation ranges on")
    if quantize is True:
        config = QuantizeConfig()
    elif isinstance(quantize, QuantizeConfig):
        config = quantize
    else:
        raise ConfigError(f"quantize= takes True, False or a QuantizeConfig, got {quantize!r}")
    if accuracy_budget is not None:
        if not isinstance(accuracy_budget, (int, float)) or isinstance(accuracy_budget, bool):
            raise ConfigError(f"accuracy_budget= takes a float in [0, 1), got {accuracy_budget!r}")
        import dataclasses

        config = dataclasses.replace(config, budget=float(accuracy_budget))
    config.check()
    return config


def _calibration(calib_data, model):
    if calib_data is None:
        return None
    from passes.calibrate import CalibrationData

    return CalibrationData(calib_data, input_specs(model))


def _prune_config(prune):
    """prune=0.5 means: remove half of the MACs; a PruneConfig says everything else."""
    from passes.prune_plan import PruneConfig

    if prune is None or prune is False:
        return None
    if isinstance(prune, PruneConfig):
        config = prune
    elif isinstance(prune, (int, float)) and not isinstance(prune, bool):
        config = PruneConfig(amount=float(prune))
    else:
        raise ConfigError(f"prune= takes a float (the share of MACs to remove) or a PruneConfig, got {prune!r}")
    config.check()
    return config


def _with_pruning(pipeline: tuple, config, use_calibration: bool) -> list:
    """Prune after the first cleanup group and before BN folding (BN scales rank channels),
    drop the channels left constant (observed constant only on user calibration data, never on
    seeded random inputs), then clean up again."""
    if config is None:
        return list(pipeline)
    import dataclasses

    step = ("prune_channels", dataclasses.asdict(config))
    dead = ("eliminate_dead_channels", {"use_calibration": use_calibration})
    return [pipeline[0], step, dead, *pipeline[1:], pipeline[0]]


def _frontend(model, example_inputs, profile) -> tuple[onnx.ModelProto, dict, Optional[Path]]:
    torch = sys.modules.get("torch")  # an nn.Module means torch is imported; ONNX input never loads it
    if torch is not None and isinstance(model, torch.nn.Module):
        from . import frontend_torch

        captured = frontend_torch.capture(model, example_inputs)
        opset = min(max(17, profile.opset_range[0]), profile.opset_range[1])
        exported = frontend_torch.export_onnx(captured, opset)
        validate(exported, f"the ONNX export of {type(model).__name__}")
        info = {"kind": "torch", "module": type(model).__name__, "capture": captured.how,
                "exporter": "torch.onnx.export(dynamo=False)", "opset": opset}
        if captured.fx_failure:
            info["fx_symbolic_trace_failure"] = captured.fx_failure
        info["export_check"] = _check_export(exported, captured)
        return exported, info, None, captured
    source_path = Path(model) if isinstance(model, (str, os.PathLike)) else None
    loaded = load_model(model)
    info = {"kind": "onnx", "source": str(model) if source_path else "ModelProto",
            "opset": default_opset(loaded), "ir_version": loaded.ir_version}
    return loaded, info, source_path, None


def _check_export(exported: onnx.ModelProto, captured) -> dict:
    """The exported ONNX vs. the torch module on example_inputs."""
    specs = input_specs(exported)
    feeds = [to_feeds(captured.example_inputs, specs, "example_inputs")]
    outputs = run_all(make_session(exported), feeds)
    if len(outputs[0]) != len(captured.outputs):
        return {"passed": False, "why": f"{len(outputs[0])} ONNX outputs vs {len(captured.outputs)} torch outputs"}
    cmp = compare([captured.outputs], outputs, rtol=1e-3, atol=1e-4)
    if not cmp.passed:
        raise VerificationError(
            f"the ONNX export does not reproduce the torch module (max abs error {cmp.max_abs:.3g}); "
            f"this is a torch.onnx.export problem with this module, not a hewn pass"
        )
    return cmp.as_dict()


def _needed_opset(pipeline) -> int:
    passes = [p for item in pipeline for p in (item.passes if isinstance(item, FixedPoint) else [item])]
    return max([p.min_opset for p in passes], default=9)


def _fit_opset(model: onnx.ModelProto, profile, frontend: dict, needed: int) -> onnx.ModelProto:
    """Refuse opsets the target's runtime does not take; upgrade only when a pass needs it
    (the converter can add nodes, e.g. Flatten/Reshape around an opset-9 Softmax)."""
    opset = default_opset(model)
    low, high = profile.opset_range
    if opset > high:
        raise UnsupportedModelError(
            f"the model uses opset {opset}, newer than target '{profile.name}' supports ({low}-{high}); "
            f"export it at opset {high} or lower"
        )
    target = max(needed, low)
    if opset >= target:
        return model
    frontend["opset_upgraded_to"] = target
    return upgrade_opset(model, target, "the input model")


def _reference(model: onnx.ModelProto, example_inputs, calib_data, frontend: dict) -> Reference:
    specs = input_specs(model)
    if calib_data is not None:
        source = calib_data() if callable(calib_data) else calib_data
        if not hasattr(source, "__iter__") or isinstance(source, (str, bytes)):
            raise InputMismatchError(f"calib_data must be a list of input samples or a function returning "
                                     f"an iterable of them, got {type(calib_data).__name__}")
        feeds = [to_feeds(s, specs, f"calib_data[{i}]") for i, s in zip(range(MAX_USER_SAMPLES), source)]
        if not feeds:
            raise InputMismatchError("calib_data is empty: give at least one input sample")
        frontend["verification_inputs"] = f"{len(feeds)} calib_data samples"
    elif example_inputs is not None:
        feeds = [to_feeds(example_inputs, specs, "example_inputs")]
        frontend["verification_inputs"] = "example_inputs"
    else:
        feeds = seeded_inputs(specs, VERIFY_SAMPLES, seed=0, bounds=integer_bounds(model))
        frontend["verification_inputs"] = f"{VERIFY_SAMPLES} seeded random samples"
    try:
        session = make_session(model)
        outputs = run_all(session, feeds)
    except HewnError:
        raise
    except Exception as exc:
        raise UnsupportedModelError(
            f"ONNX Runtime cannot run the input model: {str(exc).strip().splitlines()[0]}"
        ) from None
    return Reference(feeds, outputs)


def _run_passes(graph, ctx, pipeline, profile, start=None, on_error="raise"):
    timing = Timing()
    instruments = [timing, Provenance()]
    if os.environ.get("HEWN_VERIFY_EACH_PASS") == "1":
        verify = Verify(profile.verify_rtol, profile.verify_atol)
        verify.current = start
        instruments.append(verify)
    if os.environ.get("HEWN_DUMP_DIR"):
        instruments.append(DumpIR(os.environ["HEWN_DUMP_DIR"]))
    manager = PassManager(pipeline, instruments, on_error=on_error)
    return manager.run(graph, ctx), timing


def _verify(model: onnx.ModelProto, reference: Reference, profile, lossy: list) -> dict:
    """onnx.checker, an ORT session, and outputs vs. the original's. Without lossy passes the
    outputs must match to the target's tolerance (else raise); with them, the error is reported."""
    try:
        validate(model, "the compiled model")
    except HewnError as exc:
        raise VerificationError(f"hewn produced an invalid model (a bug, please report it): {exc}") from None
    outputs = run_all(make_session(model), reference.feeds)
    checks = {"onnx_checker": "passed", "ort_session": "loaded", "samples": len(reference.feeds)}
    if lossy:
        return {**checks, "lossy_passes": lossy, **output_error(reference.outputs, outputs)}
    cmp = compare(reference.outputs, outputs, rtol=profile.verify_rtol, atol=profile.verify_atol)
    if not cmp.passed:
        raise VerificationError(
            f"the compiled model's outputs differ from the original's beyond the lossless tolerance "
            f"(max abs error {cmp.max_abs:.3g}, rtol {profile.verify_rtol}); no output was written"
        )
    return {**checks, "rtol": profile.verify_rtol, "atol": profile.verify_atol, **cmp.as_dict()}
