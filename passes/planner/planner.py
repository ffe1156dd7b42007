"""The budget planner: per-layer prune ratio and SVD rank under one accuracy budget.

1. Sensitivity (sensitivity.py): every candidate measured alone on calibration data.
2. Greedy allocation: starting from the unchanged model, repeatedly take the step (one unit
   one level further) with the most MACs saved per unit of estimated error, while the sum of
   the chosen errors fits the budget. Candidates touching the same weights exclude each other.
3. Verification on held-out data with all choices together; while the measured error misses
   the budget, the most sensitive choice (error per MAC saved) steps back one level. Every
   rollback is recorded.

Precision (int8 vs float per layer) is decided afterwards by Quantize under the same budget:
it measures against the original model, so it spends only what the structure left.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Optional

from hewn.core.errors import ConfigError
from hewn.core.fields import check_fields

from hewn.passes.planner.sensitivity import (Candidate, Scorer, measure, overrides, prune_candidates, rank_candidates)

TECHNIQUES = ("prune", "rank")


REFILL_BELOW = 0.8  # a verified plan using less than this share of its budget is allocated again


@dataclass(frozen=True)
class PlanConfig:
    techniques: tuple = TECHNIQUES
    prune_levels: tuple = (0.25, 0.5, 0.75)
    rank_fractions: tuple = (0.125, 0.25, 0.5)
    importance: str = "l1"
    structure_share: Optional[float] = None  # of the budget, when int8 follows and spends the rest;
    #                                  None: what int8 does not need, measured on the original (compile)
    finetune_slack: float = 10.0     # with train_data: the plan may spend this x its budget before fine-tune
    samples: int = 32                # calibration samples for the sensitivity table
    max_rollbacks: int = 30
    finetune_rounds: int = 3         # fine-tune + verify rounds before giving up on the budget
    margin: float = 0.8              # SVD only where rank k (m+n) <= margin * m n
    progress: bool = True

    def __post_init__(self) -> None:  # validated at construction
        check_fields(self)
        bad = [t for t in self.techniques if t not in TECHNIQUES]
        if bad or not self.techniques:
            raise ConfigError(f"plan techniques must be a non-empty subset of {TECHNIQUES}, got {self.techniques}")
        if any(not 0 < x < 1 for x in self.prune_levels):
            raise ConfigError(f"prune_levels are shares of channels in (0, 1), got {self.prune_levels}")
        if any(not 0 < x < 1 for x in self.rank_fractions):
            raise ConfigError(f"rank_fractions are shares of the full rank in (0, 1), got {self.rank_fractions}")
        if self.structure_share is not None and not 0 < self.structure_share <= 1:
            raise ConfigError(f"structure_share must be in (0, 1], got {self.structure_share}")
        if self.finetune_slack < 1:
            raise ConfigError(f"finetune_slack must be >= 1, got {self.finetune_slack}")


@dataclass
class PlanResult:
    chosen: list                       # Candidates applied
    table: list                        # all candidates (the sensitivity table)
    estimated_error: float
    measured_error: float
    measures: dict
    rollbacks: list = field(default_factory=list)
    budget: float = 0.0
    base_macs: int = 0
    refills: list = field(default_factory=list)

    def report(self) -> dict:
        saved = sum(c.macs_saved for c in self.chosen)
        return {
            "budget": self.budget, "estimated_error": round(self.estimated_error, 6),
            "measured_error": round(self.measured_error, 6), "measured": {k: round(v, 6) for k, v in self.measures.items()},
            "budget_met": self.measured_error <= self.budget + 1e-12,
            "macs_before": self.base_macs, "macs_saved_estimate": saved,
            "choices": [c.row() for c in self.chosen], "rollbacks": self.rollbacks, "refills": self.refills,
            "sensitivity": [c.row() for c in self.table],
        }


def candidates(backend, config: PlanConfig, round_to: int) -> list[Candidate]:
    found = []
    if "prune" in config.techniques:
        found += prune_candidates(backend, config.prune_levels, round_to, config.importance)
    if "rank" in config.techniques:
        found += rank_candidates(backend, config.rank_fractions, round_to, config.margin)
    return found


def allocate(table: list[Candidate], budget: float) -> list[Candidate]:
    """Greedy multiple-choice knapsack over units (levels of one unit are alternatives): the step
    with the most MACs saved per unit of output error, while the summed errors fit the budget."""
    units: dict[str, list[Candidate]] = {}
    for c in table:
        if math.isfinite(c.error):
            units.setdefault(c.unit, []).append(c)
    for levels in units.values():
        levels.sort(key=lambda c: c.macs_saved)
    current: dict[str, Candidate] = {}
    spent = 0.0
    while True:
        best, best_gain = None, 0.0
        used = frozenset().union(*[c.params for c in current.values()]) if current else frozenset()
        for unit, levels in units.items():
            now = current.get(unit)
            for nxt in levels:
                if now is not None and nxt.macs_saved <= now.macs_saved:
                    continue
                if now is None and nxt.params & used:
                    continue
                d_err = nxt.error - (now.error if now else 0.0)
                if spent + d_err > budget + 1e-12:
                    continue
                d_macs = nxt.macs_saved - (now.macs_saved if now else 0)
                d_cost = _cost(nxt) - (_cost(now) if now else 0.0)
                gain = d_macs / max(d_cost, 1e-9)
                if gain > best_gain:
                    best, best_gain = nxt, gain
        if best is None:
            return list(current.values())
        prev = current.get(best.unit)
        spent += best.error - (prev.error if prev else 0.0)
        current[best.unit] = best


def _cost(c: Candidate) -> float:
    """What ranks candidates: the output error (1 - cosine), smooth where a metric such as
    accuracy moves in steps of one sample; the budget is still checked in the metric's units."""
    return max(0.0, 1.0 - c.measures.get("cosine", 1.0 - c.error)) if c.measures else c.error


def step_back(chosen: list[Candidate], table: list[Candidate]) -> tuple[list[Candidate], Optional[dict]]:
    """Move the most sensitive choice (error per MAC saved) one level down (or drop it)."""
    if not chosen:
        return chosen, None
    worst = max(chosen, key=lambda c: (c.error / max(c.macs_saved, 1), _cost(c) / max(c.macs_saved, 1), c.layer))
    lower = [c for c in table if c.unit == worst.unit and c.macs_saved < worst.macs_saved and math.isfinite(c.error)]
    replacement = max(lower, key=lambda c: c.macs_saved) if lower else None
    out = [c for c in chosen if c is not worst] + ([replacement] if replacement else [])
    record = {"layer": worst.layer, "kind": worst.kind, "from_level": round(worst.level, 4),
              "to_level": round(replacement.level, 4) if replacement else 0.0,
              "error_alone": round(worst.error, 6)}
    return out, record


def plan(backend, scorer: Scorer, budget: float, config: PlanConfig, round_to: int,
         verify: Optional[Callable] = None) -> PlanResult:
    """Sensitivity + allocation + verification with rollback. `verify(chosen) -> (error, measures)`
    defaults to evaluating the overrides on the backend's feeds with `scorer`."""
    table = candidates(backend, config, round_to)
    measure(backend, table, scorer, progress=config.progress)
    if verify is None:
        def verify(chosen):
            return scorer(backend.outputs(overrides(backend, chosen)))
    def checked(chosen):
        return verify(chosen) if chosen else (0.0, {})

    chosen = allocate(table, budget)
    rollbacks = []
    error, measures = checked(chosen)
    chosen, error, measures = roll_back(chosen, table, error, measures, budget, checked, rollbacks,
                                        config.max_rollbacks, "measured_error_before")
    chosen, error, measures, refills = _refill(table, budget, chosen, error, measures, verify)
    from hewn.passes.prune.prune_plan import PlanCost

    return PlanResult(chosen, table, sum(c.error for c in chosen), error, measures, rollbacks, budget,
                      PlanCost(backend.analysis).base_macs, refills)


def unchanged_fallback(error: float, budget: float) -> str:
    """Why a plan over its structure budget was dropped: the unchanged model meets any budget, and
    the planner never returns a model worse than one it already had."""
    return (f"the best plan found measured error {error:.4g}, over the structure budget {budget:g}: the "
            f"structure is left unchanged (int8 may still apply)")


def roll_back(chosen, table, error, measures, budget, verify, rollbacks: list, limit: int, key: str):
    """While `error` breaks the budget, step the most sensitive choice back one level and
    re-verify; each step is appended to `rollbacks` with the error that caused it under `key`."""
    while chosen and error > budget and len(rollbacks) < limit:
        chosen, record = step_back(chosen, table)
        record[key] = round(error, 6)
        rollbacks.append(record)
        error, measures = verify(chosen)
    return chosen, error, measures


def _refill(table, budget, chosen, error, measures, verify):
    """Errors measured alone do not add up exactly: when the verified plan leaves budget unspent,
    scale the estimates by measured/estimated and allocate again (a larger stretch first, then a
    milder one); a refilled plan is kept only when it verifies within the budget and saves more."""
    refills = []
    estimate = sum(c.error for c in chosen)
    if not chosen or estimate <= 0 or error >= REFILL_BELOW * budget:
        return chosen, error, measures, refills
    stretch = estimate / max(error, estimate * 0.25)  # how far the sum overstated the measured error (<= 4x)
    saved = sum(c.macs_saved for c in chosen)
    for factor in (stretch, math.sqrt(stretch)):
        more = allocate(table, budget * factor)
        if sum(c.macs_saved for c in more) <= saved:
            continue
        e2, m2 = verify(more)
        refills.append({"budget_stretch": round(factor, 3), "choices": len(more), "measured_error": round(e2, 6),
                        "kept": e2 <= budget + 1e-12})
        if e2 <= budget + 1e-12:
            return more, e2, m2, refills
    return chosen, error, measures, refills


def split_choices(chosen: list[Candidate]) -> tuple[list[int], dict[str, int]]:
    groups = [g for c in chosen if c.kind == "prune" for g in c.detail["groups"]]
    ranks = {c.detail["node"]: c.detail["rank"] for c in chosen if c.kind == "rank"}
    return groups, ranks


def apply_torch(gm, example_inputs, chosen: list[Candidate]):
    """A new GraphModule with the choices applied for real (the input gm is not modified).
    Group ids are stable: the analysis of an identical copy numbers them identically."""
    import copy

    from hewn.passes.prune.fx_channels import analyze_module, apply_fx
    from hewn.passes.lowrank.fx_svd import svd_split_torch
    from hewn.passes.lowrank.factor import SVDConfig

    groups, ranks = split_choices(chosen)
    out = copy.deepcopy(gm)
    if groups:
        apply_fx(out, analyze_module(out, example_inputs), groups)
    if ranks:
        out, _ = svd_split_torch(out, SVDConfig(ranks=ranks, margin=math.inf, round_to=1, min_params=1))
    return out


def apply_onnx_plan(graph, analysis, chosen: list[Candidate], ctx, pass_name: str) -> None:
    from hewn.passes.lowrank.factor import SVDConfig
    from hewn.passes.prune.onnx_channels import apply_onnx
    from hewn.passes.lowrank.svd_split import SVDSplit

    groups, ranks = split_choices(chosen)
    if groups:
        apply_onnx(graph, analysis, groups, ctx.names, pass_name)
    if ranks:
        SVDSplit(SVDConfig(ranks=ranks, margin=math.inf, round_to=1, min_params=1)).run(graph, ctx)
