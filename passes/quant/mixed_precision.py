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
    ok = error["mean_cosine"] >= 1 - budget
    return ok and error.get("top1_agreement", 1.0) >= 1 - budget


def fallback_to_float(full, budget: float, make_trial: Callable) -> tuple[Optional[object], dict]:
    """(the trial that meets `budget` with the fewest float layers, or None; a report dict)."""
    base = 1.0 - full.error["mean_cosine"]
    ranking = []
    for node in full.weighted:
        trial = make_trial(full.exclude + (node,))
        gain = base - (1.0 - trial.error["mean_cosine"]) if trial is not None else base
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
