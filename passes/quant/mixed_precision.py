"""Mixed precision by sensitivity: move the layers whose quantization hurts the output most back
to float until the accuracy budget holds.

Sensitivity of a layer = how much the output error of the fully quantized model shrinks when
that one layer stays float (leave-one-out, measured in ORT on the reference inputs). The fewest
most-sensitive layers that meet the budget are found by binary search over that ranking.
"""
from __future__ import annotations

import time
from typing import Callable, Optional

SENSITIVITY_S = 30.0


def within_budget(error: dict, budget: float) -> bool:
    if error.get("shape_mismatch"):
        return False
    """The output error (1 - cosine or relative error for floats, mismatch rate for integer and bool
    outputs; inf for new NaN/Inf) and top-1 agreement both within `budget`."""
    return error["error"] <= budget and error.get("top1_agreement", 1.0) >= 1 - budget


def _capped(error: dict) -> float:
    """The error as a finite number (NaN/Inf outputs rank as the worst), for ranking layers."""
    return min(error["error"], 1e6)


def fallback_to_float(full, budget: float, make_trial: Callable, time_limit_s: float = SENSITIVITY_S,
                      probe: Optional[Callable] = None) -> tuple[Optional[object], dict]:
    """(the trial that meets `budget` with the fewest float layers, or None; a report dict). The
    leave-one-out sensitivity stops after `time_limit_s` (one quantize-and-run per layer took 146 s
    on EfficientNet-Lite0's 50 layers here); layers not measured by then rank last, in graph order."""
    base = _capped(full.error)
    ranking, deadline = [], time.perf_counter() + time_limit_s
    for node in full.weighted:
        if time.perf_counter() > deadline:
            ranking.append((float("-inf"), node))
            continue
        trial = (probe or make_trial)(full.exclude + (node,))
        gain = base - _capped(trial.error) if trial is not None else base
        ranking.append((gain, node))
    measured = sum(1 for gain, _ in ranking if gain != float("-inf"))
    ranking.sort(key=lambda item: (-item[0], full.weighted.index(item[1])))
    order = [node for _, node in ranking]
    report = {"start": full.scheme, "error_all_int8": round(base, 6),
              "sensitivity": [{"node": n, "cosine_gain_if_float": round(g, 6)} for g, n in ranking[:20]
                              if g != float("-inf")]}
    if measured < len(order):
        report["sensitivity_measured"] = f"{measured} of {len(order)} layers within {time_limit_s:.0f} s"
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
