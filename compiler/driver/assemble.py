"""The pipelines compile() runs, put together by slot name from the target profile and the options:

    ONNX:  prepare, cleanup, [prune, dead channels], fold, lower, [cleanup again], [planner, cleanup],
           [sparsify], [quantize], finish
    LM:    decoder (the target's decoder fusions), weight_only (under the perplexity budget)
    torch: [plan_torch] or [prune_torch, distill] before export (torch models only)
"""
from __future__ import annotations

import dataclasses
from typing import Optional

from hewn.core.manager import PipelineItem
from hewn.core.pipeline import flatten
from hewn.driver.options import Options
from hewn.passes import build_pipeline


def onnx_steps(opts: Options, *, prune=None, planner=None, quantize=None) -> list:
    """Pipeline steps for the ONNX side. `prune` is opts.prune unless the torch side already
    pruned; `planner` is the PlanStructure pass for an ONNX model with accuracy_budget=."""
    if opts.passes is not None:
        return list(opts.passes)
    profile = opts.profile
    if opts.lm is not None:  # a causal LM: the target's decoder fusions, then its weights under the perplexity budget
        return [*profile.decoder, ("weight_only", {"budget": opts.lm.budget})]
    prepare = [s for s in profile.prepare if not (opts.keep_dynamic and _name(s) == "static_shapes")]
    steps = [*prepare, *profile.cleanup]
    if prune is not None:  # before BN folding: BatchNorm scales rank the channels
        # constant channels are observed only on user calibration data, never on seeded inputs
        steps += [("prune_channels", dataclasses.asdict(prune)),
                  ("eliminate_dead_channels", {"use_calibration": opts.calib_data is not None})]
    steps += [*profile.fold, *profile.lower]
    if prune is not None:
        steps += profile.cleanup
    if planner is not None:
        steps += [planner, *profile.cleanup]
    if opts.sparsify is not None:
        steps.append(opts.sparsify)
    if quantize is not None:
        steps.append(("quantize", dataclasses.asdict(quantize)))
    return [*steps, *profile.finish]


def onnx_pipeline(opts: Options, **kwargs) -> list[PipelineItem]:
    return build_pipeline(onnx_steps(opts, **kwargs), opts.profile.pass_configs)


def needed_opset(pipeline: list[PipelineItem]) -> int:
    return max([p.min_opset for p in flatten(pipeline)], default=9)


def torch_steps(opts: Options, structure: Optional[tuple[float, dict]] = None) -> list:
    """The torch side for a torch model: the planner (with `structure` = (structure budget, how it
    was split)), or pruning followed by distillation when train_data= is given; else nothing."""
    if opts.planning:
        from hewn.passes.planner.torch_plan import PlanTorch, PlanTorchConfig

        budget, how = structure
        return [PlanTorch(PlanTorchConfig(opts.budget, budget, opts.plan, opts.distill, tuple(how.items())))]
    if opts.prune is not None and opts.finetune:
        from hewn.passes.distill.config import DistillConfig
        from hewn.passes.distill.train import DistillTorch
        from hewn.passes.prune.fx_channels import PruneTorch

        return [PruneTorch(opts.prune), DistillTorch(opts.distill or DistillConfig())]
    return []


def _name(step) -> str:
    return step if isinstance(step, str) else step[0] if isinstance(step, tuple) else getattr(step, "name", "")
