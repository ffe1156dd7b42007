"""Mixed precision by sensitivity: move the layers whose quantization hurts the output most back
to float until the accuracy budget holds.

Sensitivity of a layer = how much the output error of the fully quantized model shrinks when
that one layer stays float (leave-one-out, measured in ORT on the reference inputs). The fewest
most-sensitive layers that meet the budget are found by binary search over that ranking.
"""
from __future__ import annotations

from typing import Callable, Optional


def within_budget(error: dict, budget: float) -> bool:
    if error.get("shape_mismatch"):
        return False
    """The output error (1 - cosine or relative error for floats, mismatch rate for integer and bool
    outputs; inf for new NaN/Inf) and top-1 agreement both within `budget`."""
    return error["error"] <= budget and error.get("top1_agreement", 1.0) >= 1 - budget


def _capped(error: dict) -> float:
    """The error as a finite number (NaN/Inf outputs rank as the worst), for ranking layers."""
    return min(error["error"], 1e6)


def fallback_to_float(full, budget: float, make_trial: Callable) -> tuple[Optional[object], dict]:
    """(the trial that meets `budget` with the fewest float layers, or None; a report dict)."""
    base = _capped(full.error)
    ranking = []
    for node in full.weighted:
        trial = make_trial(full.exclude + (node,))
        gain = base - _capped(trial.error) if trial is not None else base
        ranking.append((gain, node))
    ranking.sort(key=lambda item: (-item[0], full.weighted.index(item[1])))
    order = [node for _, node in ranking]
    report = {"start": full.scheme, "error_all_int8": round(base, 6),
              "sensitivity": [{"node": n, "cosine_gain_if_float": round(g, 6)} for g, n in ranking[:20]]}
    lo, hi, best = 1, len(order), None
    while lo <= hi:
        k = (lo + hi) // 2
        trial = make_trial(full.exclude + tuple(order[:k])) if k < len(order) else None
        if trial is not None and within_budget(trial.error, budget):
            best, hi = trial, k - 1
        else:
            lo = k + 1
    if best is None:
        report["result"] = "even with every sensitive layer in float the budget is not met"
        return None, report
    report["float_layers"] = list(best.exclude[len(full.exclude):])
    report["result"] = f"{len(report['float_layers'])} of {len(order)} layers kept in float"
    return best, report
