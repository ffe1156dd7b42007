"""Choosing what to prune (IR-neutral): group importance, the cost of a candidate plan, and the
uniform / global policies that hit a MAC or parameter budget with kernel-friendly widths."""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np

from hewn.core.errors import ConfigError
from hewn.core.fields import check_fields

from hewn.passes.analysis.macs import RULES as MAC_RULES
from hewn.passes.analysis.macs import op_macs
from hewn.passes.prune.channel_groups import ChannelAnalysis, Family

IMPORTANCE = ("l1", "l2", "bn_scale", "activation", "taylor")


@dataclass(frozen=True)
class PruneConfig:
    """What to remove and how to choose it."""

    amount: float = 0.5                 # share of `metric` to remove, in [0, 1)
    metric: str = "macs"                # "macs" or "params"
    importance: str = "l1"              # see IMPORTANCE; "taylor" needs gradients (torch side)
    ranking: str = "uniform"            # "uniform": one ratio per family; "global": one score threshold
    max_ratio: float = 0.9              # at most this share of a family's channels goes
    round_to: Optional[int] = None      # kept widths are multiples of this; None = the target's choice
    exclude: tuple = ()                 # layers (names or globs, hewn.core.names) whose channels are never pruned

    def __post_init__(self) -> None:  # validated at construction
        check_fields(self)
        if not 0.0 <= self.amount < 1.0:
            raise ConfigError(f"prune amount must be in [0, 1) (a share of {self.metric} to remove), got {self.amount}")
        if self.metric not in ("macs", "params"):
            raise ConfigError(f"prune metric must be 'macs' or 'params', got {self.metric!r}")
        if self.importance not in IMPORTANCE:
            raise ConfigError(f"prune importance must be one of {IMPORTANCE}, got {self.importance!r}")
        if self.ranking not in ("uniform", "global"):
            raise ConfigError(f"prune ranking must be 'uniform' or 'global', got {self.ranking!r}")
        if not 0.0 < self.max_ratio < 1.0:
            raise ConfigError(f"prune max_ratio must be in (0, 1), got {self.max_ratio}")
        if self.round_to is not None and self.round_to < 1:
            raise ConfigError(f"prune round_to must be >= 1, got {self.round_to}")


# ---------------------------------------------------------------------------------------------
# importance


def param_index_scores(analysis: ChannelAnalysis, kind: str, grads: Optional[Callable] = None) -> Callable:
    """A function edit -> score per param index (along the edit's axis), mean-normalized."""

    def scores(edit) -> Optional[np.ndarray]:
        value = analysis.view.const(edit.param)
        if value is None or value.ndim == 0:
            return None
        moved = np.moveaxis(np.abs(value.astype(np.float64)), edit.axis, 0).reshape(value.shape[edit.axis], -1)
        if kind == "taylor":
            g = grads(edit.param) if grads else None
            if g is None:
                return None
            moved = np.moveaxis(np.abs(value * g).astype(np.float64), edit.axis, 0).reshape(value.shape[edit.axis], -1)
            s = moved.sum(1)
        elif kind == "l2":
            s = np.sqrt((moved ** 2).sum(1))
        else:
            s = moved.sum(1)
        mean = s.mean()
        return s / mean if mean > 0 else s

    return scores


def group_scores(analysis: ChannelAnalysis, families: list, kind: str, activations: Optional[dict] = None,
                 grads: Optional[Callable] = None) -> dict[int, float]:
    """group id -> importance (higher = keep). Members are averaged so every layer counts once."""
    roles = {"l1": ("producer", "sink"), "l2": ("producer", "sink"), "taylor": ("producer", "sink"),
             "bn_scale": ("scale",), "activation": ()}[kind]
    per_index = param_index_scores(analysis, kind, grads)
    out: dict[int, float] = {}
    for fam in families:
        edits = [e for e in analysis.family_edits(fam) if e.role in roles
                 and (kind != "bn_scale" or analysis.ops[e.op].kind == "BatchNormalization")]
        tables = []
        for e in edits:
            s = per_index(e)
            if s is None:
                continue
            full = np.full(analysis.spaces[analysis.index[e.space]].size, np.nan)
            full[e.elems] = s[e.index]
            tables.append((analysis.index[e.space], full))
        if kind == "activation" and activations:
            for sid in fam.spaces:
                act = activations.get(sid)
                if act is not None and act.mean() > 0:
                    tables.append((sid, act / act.mean()))
        if not tables:  # e.g. bn_scale on a family without BN: fall back to magnitude
            if kind != "l1":
                out.update(group_scores(analysis, [fam], "l1"))
            else:
                out.update({gid: 0.0 for gid in fam.groups})
            continue
        for gid in fam.groups:
            members = analysis.groups[gid].members
            vals = [np.nanmean(t[members[sid]]) for sid, t in tables if sid in members]
            vals = [v for v in vals if not math.isnan(v)]
            out[gid] = float(np.mean(vals)) if vals else 0.0
    return out


# ---------------------------------------------------------------------------------------------
# cost of a plan


class PlanCost:
    """MACs and parameters of the model after removing a set of groups (no surgery needed)."""

    def __init__(self, analysis: ChannelAnalysis):
        self.a = analysis
        self.weighted = [op for op in analysis.ops.values()
                         if op.kind in MAC_RULES]
        self.base_macs = self.macs({})
        self.base_params = self._base_params()

    def _shape_fn(self, dims: dict):
        view = self.a.view

        def shape(tensor):
            s = view.shape(tensor)
            if s is None:
                return s
            s = list(s)
            for axis, n in dims.get(tensor, {}).items():
                s[axis] = n
            return s

        return shape

    def new_dims(self, removed: dict) -> dict:
        dims: dict[str, dict[int, int]] = {}
        for sid, mask in removed.items():
            if not mask.any():
                continue
            rec = self.a.spaces[sid]
            shape = self.a.view.shape(rec.tensor)
            if len(rec.axes) == 1:
                dims.setdefault(rec.tensor, {})[rec.axes[0]] = int(shape[rec.axes[0]] - mask.sum())
                continue
            grid = (~mask).reshape([int(shape[a]) for a in rec.axes])
            for k, axis in enumerate(rec.axes):
                other = tuple(j for j in range(len(rec.axes)) if j != k)
                dims.setdefault(rec.tensor, {})[axis] = int(grid.any(axis=other).sum())
        for (param, axis), idx in self.a.param_cuts(removed).items():
            shape = self.a.view.shape(param)
            dims.setdefault(param, {})[axis] = int(shape[axis] - len(idx))
        return dims

    def macs(self, removed: dict) -> int:
        shape = self._shape_fn(self.new_dims(removed) if removed else {})

        def shapes(tensors):
            return [shape(t) if t is not None else None for t in tensors]
        return sum(op_macs(op.kind, shapes(op.inputs), shapes(op.outputs), op.attrs) for op in self.weighted)

    def _base_params(self) -> int:
        seen = {e.param for e in self.a.edits}
        return sum(int(np.prod(self.a.view.shape(p), dtype=np.int64)) for p in seen)

    def params_removed(self, removed: dict) -> int:
        total = 0
        for (param, axis), idx in self.a.param_cuts(removed).items():
            shape = self.a.view.shape(param)
            total += len(idx) * int(np.prod(shape, dtype=np.int64)) // int(shape[axis])
        return total


# ---------------------------------------------------------------------------------------------
# policies


@dataclass
class Plan:
    groups: list                       # group ids to remove
    per_family: dict                   # family id -> groups removed
    macs_before: int
    macs_after: int
    params_removed: int
    reached: float                     # share of the metric removed
    notes: list = field(default_factory=list)


def family_unit(analysis: ChannelAnalysis, fam: Family, round_to: int) -> int:
    """Kept group counts are multiples of this so the channel counts are multiples of round_to."""
    producer_spaces = {analysis.index[e.space] for e in analysis.family_edits(fam) if e.role == "producer"}
    per = [fam.per_group[s] for s in producer_spaces] or list(fam.per_group.values())
    m = min(per) if per else 1
    return max(1, round_to // math.gcd(round_to, m))


def keep_options(width: int, unit: int, max_ratio: float) -> list[int]:
    floor = max(unit, math.ceil(width * (1 - max_ratio)))
    opts = [k for k in range(unit, width, unit) if k >= floor]
    return sorted(set(opts + [width]))


def choose(analysis: ChannelAnalysis, config: PruneConfig, scores: dict, round_to: int, families: list) -> Plan:
    cost = PlanCost(analysis)
    order = {f.id: sorted(f.groups, key=lambda g: (scores.get(g, 0.0), g)) for f in families}
    options = {f.id: keep_options(f.width, family_unit(analysis, f, round_to), config.max_ratio) for f in families}

    def evaluate(keep: dict) -> tuple:
        groups = [g for f in families for g in order[f.id][:f.width - keep[f.id]]]
        removed = analysis.removed_elements(groups)
        macs = cost.macs(removed)
        if config.metric == "macs":
            share = 1 - macs / cost.base_macs if cost.base_macs else 0.0
        else:
            share = cost.params_removed(removed) / cost.base_params if cost.base_params else 0.0
        return share, groups, removed, macs

    def keep_at(f, want: float) -> int:
        fitting = [k for k in options[f.id] if k >= want]
        return min(fitting) if fitting else f.width

    if config.ranking == "uniform":
        def keeps(r):
            return {f.id: keep_at(f, f.width * (1 - r)) for f in families}
        lo, hi = 0.0, config.max_ratio
    else:
        norm = {}
        for f in families:
            vals = np.array([scores.get(g, 0.0) for g in f.groups])
            mean = vals.mean() if len(vals) and vals.mean() > 0 else 1.0
            norm.update({g: scores.get(g, 0.0) / mean for g in f.groups})
        all_scores = sorted(norm.values())

        def keeps(r):
            if not all_scores:
                return {}
            t = all_scores[min(int(r * len(all_scores)), len(all_scores) - 1)] if r > 0 else -np.inf
            return {f.id: keep_at(f, sum(1 for g in f.groups if norm[g] >= t)) for f in families}
        lo, hi = 0.0, 1.0
    best = evaluate(keeps(0.0)) + (keeps(0.0),)
    if config.amount > 0:
        top = evaluate(keeps(hi))
        if top[0] < config.amount:
            best = top + (keeps(hi),)
        else:
            for _ in range(30):
                mid = (lo + hi) / 2
                got = evaluate(keeps(mid))
                if got[0] >= config.amount:
                    hi, best = mid, got + (keeps(mid),)
                else:
                    lo = mid
                if hi - lo < 1e-4:
                    break
            best = _refine(keeps(lo), best, families, scores, evaluate, config.amount)
    share, groups, removed, macs, keep = best
    notes = []
    if share + 1e-9 < config.amount:
        notes.append(f"reached {share:.1%} of the {config.amount:.0%} {config.metric} asked: the prunable channels "
                     f"are capped at max_ratio={config.max_ratio}; the rest of the model is not prunable (see blocked)")
    per_family = {f.id: f.width - keep[f.id] for f in families if keep[f.id] < f.width}
    return Plan(groups, per_family, cost.base_macs, macs, cost.params_removed(removed), share, notes)


def _refine(below: dict, above: tuple, families: list, scores: dict, evaluate, amount: float) -> tuple:
    """Coarse widths make one ratio step jump past the budget: starting from the plan just below
    it, take the step family by family (least important first) and stop once the budget is met."""
    keep_above = above[-1]
    changed = [f for f in families if below[f.id] != keep_above[f.id]]
    changed.sort(key=lambda f: (np.mean([scores.get(g, 0.0) for g in f.groups]), f.id))
    keep = dict(below)
    for f in changed:
        keep[f.id] = keep_above[f.id]
        got = evaluate(keep)
        if got[0] >= amount:
            return got + (dict(keep),)
    return above


def plan_stats(analysis: ChannelAnalysis, plan, round_to: int, cfg) -> dict:
    layers = []
    for fam in analysis.families:
        removed = plan.per_family.get(fam.id, 0)
        if fam.blocked is None and fam.width > 1 or removed:
            layers.append({"channels": fam.producers, "width_before": fam.width,
                           "width_after": fam.width - removed})
    return {"config": dataclasses.asdict(cfg), "round_to": round_to, "macs_before": plan.macs_before,
            "macs_after": plan.macs_after, "reached": round(plan.reached, 4), "params_removed": plan.params_removed,
            "groups_removed": len(plan.groups), "layers": layers, "notes": plan.notes}
