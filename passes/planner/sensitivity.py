"""Sensitivity analysis: what each candidate change costs the model output, layer by layer.

A candidate is one layer at one level: a channel family pruned by 25/50/75 %, or one weight
factored at a rank fraction. Each is measured *alone* on calibration data, without surgery:
pruning zeroes the removed channels where weighted ops read them (what physical removal
computes), SVD replaces the weight by its rank-k approximation (what the split computes). That
is an override of a few weights, so one IR-neutral loop serves both IRs through a Backend:
ORT on an ONNX graph, or torch on an fx GraphModule (the one that will be fine-tuned).

Rows hold the output error (1 - cosine, SQNR, top-1 agreement, the user's metric when given)
and the MACs the change saves (the target's cost model), which is what the planner trades.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence

import numpy as np

from hewn.core.measure import output_error

from hewn.passes.lowrank.factor import conv_matrix, factors, rank_options, svd, worth_it
from hewn.passes.prune.prune_plan import PlanCost, family_unit, group_scores, keep_options


@dataclass
class Candidate:
    kind: str                      # "prune" or "rank"
    layer: str                     # what users recognise: producer labels / node or module name
    level: float                   # share of channels removed, or rank / full rank
    macs_saved: int
    params: frozenset              # weights it touches (two candidates touching one conflict)
    detail: dict = field(default_factory=dict)   # {"groups": [...]} or {"rank": k, "node": name}
    unit: str = ""                 # candidates of one unit are levels of the same choice
    error: float = math.nan        # the budgeted quantity, measured alone
    measures: dict = field(default_factory=dict)

    def row(self) -> dict:
        return {"kind": self.kind, "layer": self.layer, "level": round(self.level, 4), "macs_saved": self.macs_saved,
                "error": _r(self.error), **{k: _r(v) for k, v in self.measures.items()},
                **({"rank": self.detail["rank"]} if "rank" in self.detail else {}),
                **({"channels_removed": self.detail["channels_removed"]} if "channels_removed" in self.detail else {})}


def _r(v):
    return round(float(v), 6) if isinstance(v, (float, np.floating)) else v


class Scorer:
    """Turns outputs into the budgeted error: the drop of `metric(outputs)` when a metric is given
    (higher is better, e.g. accuracy), else the output error to the reference outputs (1 - cosine or
    relative error for floats, mismatch rates for integer and bool outputs; inf for new NaN/Inf).
    `classes`: the outputs top-1 agreement judges (Reference.classes); `named` "top1" budgets the
    drop in top-1 agreement, "cosine" 1 - the mean output cosine."""

    def __init__(self, reference: list, metric: Optional[Callable] = None, classes=(), named: Optional[str] = None):
        self.reference = reference
        self.metric = metric
        self.classes, self.named = classes, named
        self.base_metric = float(metric(reference)) if metric else None

    def __call__(self, outputs: list) -> tuple[float, dict]:
        err = output_error(self.reference, outputs, self.classes)
        if err.get("shape_mismatch"):
            return math.inf, {"cosine": 0.0}
        cos = err["mean_cosine"]
        measures = {"cosine": cos, "sqnr_db": _sqnr(self.reference, outputs)}
        if "top1_agreement" in err:
            measures["top1_agreement"] = err["top1_agreement"]
        if self.metric is None and self.named == "top1" and "top1_agreement" in err:
            return 1.0 - err["top1_agreement"], measures
        if self.metric is None and self.named == "cosine":
            return max(0.0, 1.0 - cos), measures
        if self.metric is None:
            return err["error"], measures
        value = float(self.metric(outputs))
        measures["metric"] = value
        return max(0.0, self.base_metric - value), measures


def _sqnr(reference, outputs) -> float:
    sig = noise = 0.0
    for ref, out in zip(reference, outputs):
        for r, o in zip(ref, out):
            r, o = np.asarray(r, np.float64), np.asarray(o, np.float64)
            sig += float((r ** 2).sum())
            noise += float(((r - o) ** 2).sum())
    return 10 * math.log10(sig / noise) if noise > 0 and sig > 0 else 200.0


# ---------------------------------------------------------------------------------------------
# candidates


def prune_candidates(backend, levels: Sequence[float], round_to: int, importance: str = "l1") -> list[Candidate]:
    analysis = backend.analysis
    families = [f for f in analysis.prunable() if backend.prunable(f)]
    if not families:
        return []
    scores = group_scores(analysis, families, importance)
    cost = PlanCost(analysis)
    out = []
    for fam in families:
        order = sorted(fam.groups, key=lambda g: (scores.get(g, 0.0), g))
        options = keep_options(fam.width, family_unit(analysis, fam, round_to), 0.9)
        params = frozenset(backend.param_key(e.param) for e in analysis.family_edits(fam))
        seen = set()
        for level in levels:
            fitting = [k for k in options if k >= fam.width * (1 - level)]
            keep = min(fitting) if fitting else fam.width
            if keep >= fam.width or keep in seen:
                continue
            seen.add(keep)
            groups = order[:fam.width - keep]
            saved = cost.base_macs - cost.macs(analysis.removed_elements(groups))
            if saved <= 0:
                continue
            label = ", ".join(fam.producers[:3]) or analysis.spaces[fam.spaces[0]].tensor
            out.append(Candidate("prune", label, 1 - keep / fam.width, int(saved), params,
                                 {"groups": groups, "family": fam.id, "channels_removed": fam.width - keep,
                                  "width": fam.width}, unit=f"prune:{fam.id}"))
    return out


def rank_candidates(backend, fractions: Sequence[float], round_to: int, margin: float = 0.8,
                    min_params: int = 4096) -> list[Candidate]:
    out = []
    for item in backend.factorizable(min_params):
        m, n = item.matrix.shape
        full = min(m, n)
        for k in rank_options(full, fractions, round_to):
            if not worth_it(m, n, k, margin):
                continue
            saved = int(item.macs - item.macs * k * (m + n) / (m * n))
            out.append(Candidate("rank", item.name, k / full, saved, frozenset([item.param]),
                                 {"rank": k, "node": item.name}, unit=f"rank:{item.name}"))
    return out


def overrides(backend, chosen: Sequence[Candidate]) -> dict[str, np.ndarray]:
    """The weights that make the unmodified model compute what the chosen changes compute."""
    analysis = backend.analysis
    values: dict[str, np.ndarray] = {}
    prune_groups = [g for c in chosen if c.kind == "prune" for g in c.detail["groups"]]
    if prune_groups:
        removed = analysis.removed_elements(prune_groups)
        for e in analysis.edits:
            mask = removed.get(analysis.index[e.space])
            if e.role != "sink" or mask is None or not mask[e.elems].any():
                continue
            key = backend.param_key(e.param)
            if key not in values:
                values[key] = np.array(backend.const(key), copy=True)
            index = [slice(None)] * values[key].ndim
            index[e.axis] = np.asarray(e.index)[mask[e.elems]]
            values[key][tuple(index)] = 0
    items = {i.name: i for i in backend.factorizable(0)} if any(c.kind == "rank" for c in chosen) else {}
    for c in chosen:
        if c.kind != "rank":
            continue
        item = items[c.detail["node"]]
        a, b = factors(*svd(item.matrix), c.detail["rank"])
        values[item.param] = item.to_param(a @ b)
    return values


def measure(backend, candidates: list[Candidate], scorer: Scorer, progress: bool = False) -> None:
    """Fill each candidate's error and measures (one model evaluation per candidate)."""
    it = candidates
    if progress:
        from hewn.core.progress import bar

        it = bar(candidates, desc="sensitivity", unit="candidate")
    for c in it:
        c.error, c.measures = scorer(backend.outputs(overrides(backend, [c])))


@dataclass
class FactorItem:
    name: str
    param: str
    matrix: np.ndarray                        # out x in (float64)
    macs: int
    to_param: Callable[[np.ndarray], np.ndarray]


def conv_item(name, param, w, macs, dtype) -> FactorItem:
    return FactorItem(name, param, conv_matrix(w).astype(np.float64), macs,
                      lambda m, shape=w.shape: m.reshape(shape).astype(dtype))
