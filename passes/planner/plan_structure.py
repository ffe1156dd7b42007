"""PlanStructure: the budget planner as an ONNX pass (models that arrive as ONNX, no fine-tune).

Measures the sensitivity table on calibration data (or the reference inputs), allocates prune
ratios and SVD ranks under `budget`, verifies them together and rolls back the most sensitive
choices until the budget holds, then applies the plan by real surgery.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Callable, Optional

import onnx_graphsurgeon as gs

from hewn.core.errors import ConfigError
from hewn.core.pass_infra import Pass, PassResult
from hewn.core.runtime import spread

from hewn.passes.quant.calibrate import calibration_source
from hewn.core.graph_utils import name_nodes
from hewn.passes.planner.backends import OnnxBackend
from hewn.passes.planner.planner import PlanConfig, apply_onnx_plan, plan, unchanged_fallback
from hewn.passes.planner.sensitivity import Scorer


@dataclass(frozen=True)
class PlanStructureConfig:
    budget: float = 0.01                  # 1 - cosine (or metric drop) the structure may spend
    plan: PlanConfig = field(default_factory=PlanConfig)
    eval_feeds: Optional[tuple] = None    # held-out feeds (dicts) for verification; None = calibration
    metric: Optional[Callable] = None     # metric(outputs over eval_feeds) -> float, higher is better
    metric_name: Optional[str] = None     # "top1" / "cosine": what the budget is judged in without a metric


class PlanStructure(Pass):
    name = "plan_structure"
    lossless = False
    Config = PlanStructureConfig

    def run(self, graph: gs.Graph, ctx) -> PassResult:
        cfg = self.config
        name_nodes(graph)  # candidates are named by node; exported graphs may omit or repeat names
        feeds = _calibration_feeds(ctx, cfg.plan.samples)
        if not feeds:
            ctx.note(self.name, "model", "no calibration or reference inputs to measure sensitivity on")
            return PassResult(False, {})
        backend = OnnxBackend(graph, ctx, feeds)
        eval_feeds = list(cfg.eval_feeds) if cfg.eval_feeds else feeds
        if cfg.metric is not None or cfg.eval_feeds:
            backend.feeds = eval_feeds
        scorer = Scorer(backend.outputs({}), cfg.metric, ctx.reference.classes if ctx.reference else {},
                        cfg.metric_name)
        result = plan(backend, scorer, cfg.budget, dataclasses.replace(cfg.plan, progress=False),
                      ctx.target.channel_multiple)
        stats = result.report()
        if result.chosen and result.measured_error > cfg.budget + 1e-12:   # never worse than the unchanged model
            stats["fallback"] = unchanged_fallback(result.measured_error, cfg.budget)
            result.chosen = []
        if not result.chosen:
            ctx.note(self.name, "model", f"no prune/rank change fits the budget {cfg.budget}")
            return PassResult(False, stats)
        apply_onnx_plan(graph, backend.analysis, result.chosen, ctx, self.name)
        graph.cleanup().toposort()
        return PassResult(True, stats)


def _calibration_feeds(ctx, count: int) -> list:
    try:
        source, _ = calibration_source(ctx)
    except ConfigError:
        return []
    return spread(source, count)[0]   # over all of calib_data, not its first samples
