"""The torch side of compile()'s planner: plan prune ratios and SVD ranks on the captured fx
graph, apply them, fine-tune by distillation when train_data is given, verify on held-out
data, and back off (most sensitive choice first) when the budget is missed."""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Callable, Optional

from hewn.core.errors import ConfigError
from hewn.core.torch_step import TorchContext, TorchStep, TorchStepResult
from hewn.passes.distill.config import DistillConfig
from hewn.passes.distill.train import distill
from hewn.core.runtime import spread
from hewn.core.torch_run import run_torch, torch_feeds
from hewn.passes.planner.torch_backend import TorchBackend
from hewn.passes.planner.planner import PlanConfig, apply_torch, plan, roll_back, step_back, unchanged_fallback
from hewn.passes.planner.sensitivity import Scorer


def plan_torch(captured, *, budget: float, config, round_to: int, calib: list, eval_feeds: list,
               metric: Optional[Callable], train_data=None, distill_config: Optional[DistillConfig] = None,
               structure_budget: float, classes=(), named: Optional[str] = None) -> tuple:
    """(the planned GraphModule, the plan report)."""
    gm, example = captured.graph_module, captured.example_inputs
    sens_feeds = eval_feeds if metric is not None else spread(calib, config.samples)[0]
    backend = TorchBackend(gm, example, sens_feeds)
    scorer = Scorer(backend.outputs({}), metric, classes, named)
    eval_tensors = torch_feeds(eval_feeds)
    eval_scorer = Scorer(backend.outputs({}, eval_tensors), metric, classes, named)
    finetune = train_data is not None
    plan_budget = structure_budget * (config.finetune_slack if finetune else 1.0)
    result = plan(backend, scorer, plan_budget, config, round_to)
    report = result.report()
    report.update({"ir": "torch.fx", "structure_budget": structure_budget, "plan_budget": plan_budget,
                   "sensitivity_samples": len(sens_feeds), "verification_samples": len(eval_feeds)})

    def measured(model) -> tuple[float, dict]:
        return eval_scorer(run_torch(model, eval_tensors))

    chosen = list(result.chosen)
    planned = apply_torch(gm, example, chosen)
    error, measures = measured(planned)
    report["measured_before_finetune"] = {"error": round(error, 6), **{k: round(v, 6) for k, v in measures.items()}}
    if not finetune:  # the plan was verified on the sensitivity samples; the held-out ones decide
        def applied(plan_now):
            nonlocal planned
            planned = apply_torch(gm, example, plan_now)
            return measured(planned)

        chosen, error, measures = roll_back(chosen, result.table, error, measures, structure_budget, applied,
                                            report["rollbacks"], config.max_rollbacks, "measured_error_on_eval")
    if finetune and chosen:
        distill_config = distill_config or DistillConfig()
        rounds = []
        best = None   # (error, chosen, model, measures, round): no round may leave a worse model than one it had
        for attempt in range(config.finetune_rounds):
            if not chosen:   # every choice rolled back: the unchanged model needs no fine-tuning (it only drifts)
                planned = apply_torch(gm, example, chosen)
                error, measures = measured(planned)
                rounds.append({"round": attempt + 1, "error": round(error, 6), "skipped": "no structure left to recover"})
                break
            log = distill(planned, captured.module, train_data, distill_config, example,
                          should_stop=lambda: measured(planned)[0] <= structure_budget * 0.5)
            error, measures = measured(planned)
            rounds.append({"round": attempt + 1, "error": round(error, 6), **log})
            if best is None or error < best[0]:
                best = (error, list(chosen), copy.deepcopy(planned), measures, attempt + 1)
            if error <= structure_budget:
                break
            chosen, record = step_back(chosen, result.table)
            record["measured_error_after_finetune"] = round(error, 6)
            report["rollbacks"].append(record)
            planned = apply_torch(gm, example, chosen)
        if best is not None and best[0] < error and best[1]:   # an earlier round was better: keep it
            error, chosen, planned, measures, kept = best
            rounds.append({"kept_round": kept})
        report["finetune"] = rounds
    if error > structure_budget + 1e-12 and chosen:   # the unchanged model meets any budget: never return worse
        report["fallback"] = unchanged_fallback(error, structure_budget)
        chosen = []
        planned = apply_torch(gm, example, chosen)
        error, measures = measured(planned)
    report["choices"] = [c.row() for c in chosen]
    report["macs_saved_estimate"] = sum(c.macs_saved for c in chosen)
    report["measured_error"] = round(error, 6)
    report["measured"] = {k: round(v, 6) for k, v in measures.items()}
    report["budget_met"] = error <= structure_budget + 1e-12
    if not report["budget_met"]:
        report["statement"] = (f"structure budget {structure_budget:g} missed: the best plan found has error "
                               f"{error:.4g} after {len(report['rollbacks'])} rollbacks")
    return planned, report


@dataclass(frozen=True)
class PlanTorchConfig:
    budget: float                    # the whole accuracy budget
    structure_budget: float          # what the structure plan may spend (hewn.passes.planner.budget)
    plan: PlanConfig = PlanConfig()
    distill: Optional[DistillConfig] = None
    how: tuple = ()                  # (key, value) pairs: where the structure budget came from, for the report


class PlanTorch(TorchStep):
    """compile()'s planner on the torch side: the first torch step (it plans on the captured fx graph)."""

    name = "plan_torch"

    def run(self, module, ctx: TorchContext) -> TorchStepResult:
        cfg = self.config
        if module is not ctx.captured.module:
            raise ConfigError("plan_torch plans the captured model: run it as the first torch-side step")
        planned, report = plan_torch(ctx.captured, budget=cfg.budget, config=cfg.plan,
                                     round_to=ctx.target.channel_multiple, calib=ctx.calib, eval_feeds=ctx.held_out,
                                     metric=ctx.metric, train_data=ctx.train_data, distill_config=cfg.distill,
                                     structure_budget=cfg.structure_budget, classes=ctx.classes,
                                     named=ctx.metric_name)
        report.update(dict(cfg.how))
        return TorchStepResult(planned, {"plan": report})
