"""The torch side of compile(): the torch steps (planner, or pruning + distillation) on the
captured module, then the export of the result. Only for torch models, and only when asked."""
from __future__ import annotations

import dataclasses
from typing import Callable, Optional

import onnx

from hewn.core.ir import default_opset, to_graph
from hewn.core.pass_infra import Context, Reference
from hewn.core.runtime import feeds_as_tuples, input_specs
from hewn.core.torch_step import TorchContext, run_torch_steps
from hewn.driver.assemble import needed_opset, onnx_pipeline, torch_steps
from hewn.driver.options import Options
from hewn.driver.run import calibration, run_passes
from hewn.frontends.from_onnx import fit_opset, samples
from hewn.frontends.source import Source
from hewn.passes.planner.budget import structure_budget
from hewn.passes.quant.config import QuantizeConfig


def wanted(source: Source, opts: Options) -> bool:
    """The torch steps edit a torch.fx graph and export it again; a module only torch.export could
    capture (most Hugging Face models) is planned and pruned on its ONNX export instead."""
    return (source.captured is not None and source.captured.how == "torch.fx.symbolic_trace"
            and (opts.planning or (opts.prune is not None and opts.finetune)))


def run_torch_side(source: Source, opts: Options, reference: Reference) -> tuple[onnx.ModelProto, dict]:
    """(the ONNX export of the model the torch steps made, their report)."""
    from hewn.frontends.from_torch import export_planned  # imports torch: only for torch models

    ctx = _context(source, opts, reference)
    structure = None
    if opts.planning:
        structure = structure_budget(opts.budget, opts.plan, opts.quantize is not None,
                                     int8_probe(source.model, opts, reference))
    module, report = run_torch_steps(source.captured.module, torch_steps(opts, structure), ctx)
    return export_planned(source.captured, module, default_opset(source.model)), report


def _context(source: Source, opts: Options, reference: Reference):
    """Sensitivity on calib_data less the samples verification holds out, verification on eval_data,
    else on those held-out samples, else (a small calib_data) on all of it, said so."""
    captured, specs = source.captured, input_specs(source.model)
    every = feeds_as_tuples(samples(opts.calib_data, "calib_data") if opts.calib_data is not None
                            else [captured.example_inputs], specs)
    calib = [s for i, s in enumerate(every) if i not in reference.held_out]
    if opts.eval_data is not None:
        held_out, held_out_from = feeds_as_tuples(samples(opts.eval_data, "eval_data"), specs), "eval_data"
    elif reference.held_out:
        held_out = [s for i, s in enumerate(every) if i in reference.held_out]
        held_out_from = f"{len(held_out)} calib_data samples held out from calibration"
    else:
        held_out, held_out_from = calib, "calib_data" if opts.calib_data is not None else "example_inputs"
    return TorchContext(captured, opts.profile, calib, held_out, held_out_from, opts.metric, opts.train_data,
                        classes=reference.classes, metric_name=opts.metric_name)


def int8_probe(original: onnx.ModelProto, opts: Options, reference: Reference) -> Callable[[], Optional[float]]:
    """What int8 alone costs on the original: the target's pipeline with Quantize (no timing) run
    on it; returns the chosen scheme's output error, or None when no int8 fits the budget."""
    def probe() -> Optional[float]:
        quantize = QuantizeConfig(budget=opts.budget, measure_speed=False)
        pipeline = onnx_pipeline(dataclasses.replace(opts, sparsify=None), quantize=quantize)
        working = fit_opset(original, opts.profile, {}, needed_opset(pipeline), reference.feeds)
        ctx = Context(opts.profile, reference=reference, ir_version=max(working.ir_version, 7),
                      calibration=calibration(opts.calib_data, original, reference.held_out))
        records, _ = run_passes(to_graph(working), ctx, pipeline, opts.profile)
        chosen = next((r.stats for r in records if r.name == "quantize"), {}).get("chosen")
        return None if not chosen else chosen["error"]
    return probe
