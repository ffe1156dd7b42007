"""compile(): options -> frontend -> [torch side] -> ONNX pipeline -> verify -> report -> emit (DESIGN.md)."""
from __future__ import annotations

import contextlib
import os
import sys
import tempfile
import time
from pathlib import Path

from hewn.core.errors import ConfigError, HewnError, InputMismatchError, StageError
from hewn.core.interrupt import signals_unwind
from hewn.core.progress import step
from hewn.core.quiet import third_party_quiet
from hewn.core.kv_cache import TokenWindows
from hewn.core.storage import finite_json
from hewn.core.runtime import input_specs, to_feeds
from hewn.driver.assemble import onnx_pipeline
from hewn.driver.options import Options, parse_options
from hewn.driver.outcome import SMALLER, outcome
from hewn.driver.quality import drift, hold_to_tolerance, lm_quality, quality
from hewn.driver.report import build_report
from hewn.driver.result import CompiledModel
from hewn.driver.run import run_onnx
from hewn.driver.torch_side import run_torch_side, wanted
from hewn.driver.verify import decoder_latency, final_check, greedy_agreement, latency, stated_budget, verify
from hewn.frontends import from_onnx
from hewn.passes.analysis.output_roles import class_outputs, judged_by
from hewn.frontends.from_onnx import samples
from hewn.frontends.kv_cache_onnx import perplexity as lm_perplexity
from hewn.frontends.source import Source


def compile(model, target="cpu", *, example_inputs=None, calib_data=None, train_data=None, distill=None,
            eval_data=None, metric=None, prune=None, quantize=None, accuracy_budget=None, plan=None,
            sparsity=None, passes=None, output=None, measure_latency=True, on_error="raise",
            input_fn=None, example_kwargs=None, dynamic_shapes=None, tokenizer=None,
            base_dir=None, strict=False) -> CompiledModel:
    """Optimize `model` (nn.Module + example_inputs, or an ONNX path / ModelProto) for `target`.

    accuracy_budget= turns the planner on: per-layer prune ratio and SVD rank chosen from a
    sensitivity table, then int8 where it fits, all under one budget (1 - output cosine, or
    the drop of `metric(outputs over eval_data)` when given). sparsity= zeroes single weights: a share
    (unstructured, stored as sparse initializers where that is smaller) or "2:4" (sparse tensor
    cores). train_data= (torch models) fine-tunes the compressed model against the original by
    distillation (a DistillConfig via distill=). on_error="skip" goes on without a pass that fails
    (its changes undone, the failure in report["skipped_passes"]); "raise" (the default) stops with
    a PassError naming it. example_inputs= is a tuple of tensors in forward()'s order or a dict
    of keyword arguments (Hugging Face style; example_kwargs= adds keywords to a tuple). Torch models
    export with dynamic batch (and sequence, for token inputs) dims where the model allows it, each
    checked at a second size; dynamic_shapes= chooses (False: static; {input: {dim: label}}); the
    mobile target exports static unless asked. input_fn= maps each item of calib_data and eval_data to the model's
    inputs (a DataLoader's (x, y) batch: input_fn=lambda batch: batch[0]). Returns a CompiledModel;
    with `output=` it is also saved there (atomically). The input model, object or file, is never
    modified. An in-memory ModelProto whose weights are in external data reads them from
    base_dir= (its folder) and nowhere else.

    Every outcome states quality: in metric= ("top1" for class scores, "cosine" for embeddings and
    features, or a function over eval_data), else in output error (1 - cosine). A change asked for
    by amount (prune=, sparsity=, a forced quantize=) that costs more than 0.05 of it is warned
    about, with where the outputs drift; strict=True refuses it instead.

    A Hugging Face causal LM or an ONNX file with its KV-cache layout, with calib_data as text
    (tokenizer=) or token ids, goes the same way with a decoder frontend (KV-cache export, or the
    file) and the target's decoder pipeline: its decoder fusions, then weight-only 4/8-bit
    compression with accuracy_budget as the allowed relative perplexity increase (default 0.05).
    """
    started = time.perf_counter()
    opts = parse_options(model, target, calib_data=calib_data, train_data=train_data, distill=distill,
                         eval_data=eval_data, metric=metric, prune=prune, quantize=quantize,
                         accuracy_budget=accuracy_budget, plan=plan, sparsity=sparsity, passes=passes,
                         measure_latency=measure_latency, on_error=on_error, input_fn=input_fn,
                         dynamic_shapes=dynamic_shapes, example_kwargs=example_kwargs,
                         example_inputs=example_inputs, tokenizer=tokenizer, base_dir=base_dir, strict=strict)
    log: list = []   # other libraries' warnings and log lines: the report's, not the terminal's
    with signals_unwind(), third_party_quiet(log), contextlib.ExitStack() as scratch:   # scratch: a causal LM's export
        return _compile(model, opts, example_inputs, example_kwargs, dynamic_shapes, output, started, scratch, log)


def _compile(model, opts: Options, example_inputs, example_kwargs, dynamic_shapes, output, started, scratch, log):
    calib_data, eval_data, metric = opts.calib_data, opts.eval_data, opts.metric   # with input_fn applied
    with stage("frontend"):
        if opts.lm is not None:
            source, reference = _load_lm(model, opts.lm.windows, scratch, opts.base_dir)
            calib_data = TokenWindows(source.layout, opts.lm.windows, lm_perplexity(source, opts.lm.windows))
        else:
            source = _load(model, example_inputs, opts, example_kwargs, dynamic_shapes)
            examples, second_size = _examples(source, example_inputs)
            reference = from_onnx.reference(source.model, examples, calib_data, source.info, second_size)
            reference.classes = class_outputs(source.model, opts.metric_name)
            set_task(reference, opts)
    _check_trainable(source, opts)
    working, torch_report = source.model, None
    if wanted(source, opts):
        with stage("torch side"):
            working, torch_report = run_torch_side(source, opts, reference)
    with stage("ONNX pipeline"):
        pipeline = onnx_pipeline(opts, prune=opts.prune if torch_report is None else None,
                                 planner=_onnx_planner(source, opts), quantize=opts.quantize)
        run = run_onnx(source.model, working, pipeline, opts.profile, reference, info=source.info,
                       calib_data=calib_data, torch_changed=torch_report is not None,
                       sparse_storage=_stores_sparse(opts), on_error=opts.on_error)
        if opts.lm is not None and source.path is not None and not isinstance(model, (str, os.PathLike)):
            run.model = _inline_from(run.model, source.path.parent)   # hewn's export folder goes with the compile
    with stage("verification"):
        verification = verify(run.model, reference, opts.profile, run.lossy, stated_budget(opts, run.lossy))
        verification.update(held_out=bool(reference.held_out), inputs=source.info.get("verification_inputs"))
        if reference.task is not None:
            verification["task_name"] = reference.task_name
        if opts.lm is not None:
            verification["greedy_tokens"] = greedy_agreement(source.model, run.model, source.layout, opts.lm.windows)
        else:   # before any timing: a change asked for by amount that lost too much is refused here (strict)
            stated = quality(verification, None, opts.metric_name, judged_by(reference.classes, opts.metric_name))
            hold_to_tolerance(stated, _unbudgeted(opts, run.lossy), opts.strict,
                              lambda: drift(source.model, run.model, reference.feeds))
    with stage("report"):
        report = build_report(source, run, verification, opts, torch_report, started)
        emitted = run.model
        if opts.profile.quant_timed and opts.measure_latency and opts.lm is not None:
            report["latency"] = decoder_latency(source.model, run.model, source.layout)
        elif opts.profile.quant_timed and opts.measure_latency:  # this machine runs the target's runtime: time it
            report["latency"] = latency(source.model, run.model, reference.feeds[0])
            emitted = _never_slower(report, source, run, reference, opts)
        if opts.planning:
            report["plan"] = {**report.get("plan", {}), "final": final_check(run.model, source.model, opts.budget,
                                                                            reference, eval_data, metric)}
        if opts.lm is None:
            final = report.get("plan", {}).get("final")
            report["quality"] = ({**stated, **quality(verification, final, opts.metric_name, stated["judged_by"])}
                                 if final else stated)
        else:
            report["quality"] = lm_quality(verification, report.get("weights"))
        report["outcome"] = outcome(report, opts)
        report["log"] = log
        report = finite_json(report)  # NaN/inf -> null, listed under "nonfinite_values"
    result = CompiledModel(emitted, report, protect=source.files())
    if output is not None:
        with step(f"saving {output}"):
            result.save(output)
    return result


@contextlib.contextmanager
def stage(name: str):
    """A failure that is not already a HewnError (hewn's own bug, or an ORT error on a model hewn
    made) becomes one line naming the stage; KeyboardInterrupt passes."""
    try:
        with step(name):
            yield
    except (HewnError, KeyboardInterrupt):
        raise
    except Exception as exc:
        raise StageError(name, exc) from exc


def _inline_from(model, folder):
    """`model` with the weights it reads from files in `folder` (hewn's private export folder,
    removed when the compile ends) held in memory instead, as the compiled model's own."""
    import onnx

    from hewn.core import external

    folder = Path(folder).resolve()
    for tensor in model.graph.initializer:
        if external.is_external(tensor) and Path(external.info(tensor)["location"]).resolve().parent == folder:
            raw = external.memmap(tensor).tobytes()
            del tensor.external_data[:]
            tensor.data_location = onnx.TensorProto.DEFAULT
            tensor.raw_data = raw
    return model


def _load_lm(model, windows: list, scratch: contextlib.ExitStack, base_dir=None):
    """A causal LM's Source (a torch module is exported with its KV cache into a private folder
    that lives until the compile ends) and its reference outputs at the decoder sizes."""
    from hewn.frontends import kv_cache_onnx

    from hewn.frontends.lm_text import check_tokens

    torch = sys.modules.get("torch")
    if torch is not None and isinstance(model, torch.nn.Module):
        from hewn.frontends.causal_lm_check import load_checked

        embedding = getattr(model, "get_input_embeddings", lambda: None)()
        if isinstance(embedding, torch.nn.Embedding):   # ids checked before the export's 15-20 s
            check_tokens(windows, embedding.num_embeddings)
        source = load_checked(model, scratch.enter_context(tempfile.TemporaryDirectory(prefix="hewn-lm-")))
    else:
        source = kv_cache_onnx.load(model, base_dir)
    check_tokens(windows, source.layout.vocab)
    return source, kv_cache_onnx.reference(source.model, source.layout)


def _load(model, example_inputs, opts: Options, example_kwargs, dynamic_shapes) -> Source:
    torch = sys.modules.get("torch")  # an nn.Module means torch is imported; ONNX input never loads it
    if torch is not None and isinstance(model, torch.nn.Module):
        from hewn.frontends import from_torch

        return from_torch.load(model, example_inputs, opts.profile, example_kwargs, dynamic_shapes)
    return from_onnx.load(model, opts.base_dir)   # example_kwargs / dynamic_shapes were refused for it by parse_options


def _examples(source: Source, example_inputs) -> tuple[list, list]:
    """The user's inputs to verify on: for a torch module its example and a perturbed copy (seeded
    inputs break index and mask inputs), for an ONNX model example_inputs when given; and the
    example at a second size along the dynamic dims (verified even when calib_data is given)."""
    if source.captured is not None:
        from hewn.frontends.from_torch import perturbed
        from hewn.frontends.torch_export import resized

        captured = source.captured
        second = [resized(captured.example_inputs, captured.names, captured.dims)] if captured.dims else []
        return [captured.example_inputs, perturbed(captured.example_inputs)], second
    return ([example_inputs] if example_inputs is not None else []), []


def _never_slower(report: dict, source: Source, run, reference, opts: Options):
    """The model to hand back: a compile that gained nothing in size and measured slower than its
    input (beyond the timing spread, twice: the second time over more runs) returns the input."""
    from hewn.core.ir import default_opset

    files = report["file_bytes"]
    low, high = opts.profile.opset_range
    if opts.quantize is not None and opts.quantize.force:   # int8 asked for: its latency warning says the rest
        return run.model
    if not report["latency"].get("slower") or files["after"] < files["before"] * SMALLER \
            or not low <= default_opset(source.model) <= high:   # an input the target cannot take stays compiled
        return run.model
    again = latency(source.model, run.model, reference.feeds[0], budget_s=10.0)
    if not again.get("slower"):
        report["latency"] = again
        return run.model
    report["returned_input"] = {
        "why": f"the compiled model measured {again['speed']} than the input twice and is not smaller: hewn "
               f"returns the input model unchanged", "latency_of_compiled": again}
    report["latency"] = {**again, "after_ms": again["before_ms"], "speedup": 1.0, "speed": "the input, unchanged",
                         "slower": False, "warning": None}
    report["after"], files["after"] = dict(report["before"]), files["before"]
    return source.model


def _check_trainable(source: Source, opts: Options) -> None:
    captured = source.captured
    if opts.finetune and captured is not None and captured.how != "torch.fx.symbolic_trace":
        from hewn.core.errors import ConfigError

        raise ConfigError(
            f"train_data= fine-tunes the module's torch.fx graph, and torch.fx.symbolic_trace cannot trace "
            f"{source.info['module']} ({captured.fx_failure}); only torch.export could capture it. Drop train_data= "
            f"(accuracy_budget= then plans on the ONNX export), or make forward() fx-traceable")


def set_task(reference, opts: Options) -> None:
    """The task's own score on the verification samples: metric="boxes" (box F1 against the
    original's boxes) or the user's metric(reference_outputs, outputs)."""
    if opts.judge is not None:
        def judged(ref, outs, user=opts.judge):
            try:
                score = float(user(ref, outs))
            except Exception as exc:  # noqa: BLE001 - the user's function: its failure is theirs, in one line
                raise InputMismatchError(f"metric=: your function raised {type(exc).__name__}: "
                                         f"{str(exc).splitlines()[0] if str(exc) else ''}") from None
            if score != score:
                raise InputMismatchError("metric=: your function returned NaN; it must return a score (1.0 = the "
                                         "original model's)")
            return score
        reference.task, reference.task_name = judged, "metric="
    elif opts.metric_name == "boxes":
        from hewn.core.boxes import box_f1, yolo_layout

        why = yolo_layout(tuple(reference.outputs[0][0].shape))
        if why:
            raise ConfigError(f"metric='boxes' reads YOLO-style detections [1, 4 + classes, anchors] from the first "
                              f"output; this model's is {why}. Give metric=f(reference_outputs, outputs) -> score "
                              f"that decodes your model's boxes")
        reference.task, reference.task_name = box_f1, "box F1"


def _onnx_planner(source: Source, opts: Options):
    """PlanStructure for an ONNX model with accuracy_budget= (a torch model plans on the torch side)."""
    if not opts.planning or (source.captured is not None and source.captured.how == "torch.fx.symbolic_trace"):
        return None
    from hewn.passes.planner.budget import structure_budget
    from hewn.passes.planner.plan_structure import PlanStructure, PlanStructureConfig

    evals = None
    if opts.eval_data is not None:
        specs = input_specs(source.model)
        evals = tuple(to_feeds(s, specs, f"eval_data[{i}]") for i, s in enumerate(samples(opts.eval_data, "eval_data")))
    budget, _ = structure_budget(opts.budget, opts.plan, opts.quantize is not None)
    return PlanStructure(PlanStructureConfig(budget=budget, plan=opts.plan, eval_feeds=evals, metric=opts.metric,
                                             metric_name=opts.metric_name))


def _unbudgeted(opts: Options, lossy: list) -> list:
    """The lossy changes the user asked for by amount, with no budget to hold them (the planner's
    and quantize's own choices are held to their budgets; a forced quantize is asked for)."""
    if opts.planning or opts.passes is not None:
        return []
    own = {p if isinstance(p, str) else p[0] for p in opts.profile.finish}
    forced = opts.quantize is not None and opts.quantize.force
    return [n for n in lossy if n not in own and (n != "quantize" or forced)]


def _stores_sparse(opts: Options) -> bool:
    return opts.sparsify is not None and opts.sparsify[1]["pattern"] == "unstructured"
