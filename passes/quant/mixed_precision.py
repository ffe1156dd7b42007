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
    """The output error (1 - cosine or relative error for floats, mismatch rate for integer and bool
    outputs; inf for new NaN/Inf), top-1 agreement (class outputs) and the task's own score
    (metric="boxes", a function) all within `budget`."""
    if error.get("shape_mismatch"):
        return False
    return (error["error"] <= budget and error.get("top1_agreement", 1.0) >= 1 - budget
            and error.get("task_score", 1.0) >= 1 - budget)


MIN_SAVED_MS = 0.002   # a layer int8 saves (next to) nothing on ranks by gain over this


def _rank(gain: float, saved_ms: Optional[float]) -> tuple:
    """Sort key: layers whose float helps first, by gain per ms given up when times are known."""
    if gain == float("-inf"):
        return (2, 0.0)
    if saved_ms is None or gain <= 0:
        return (0 if gain > 0 else 1, -gain)
    return (0, -gain / max(saved_ms, MIN_SAVED_MS))


def _capped(error: dict) -> float:
    """The error as a finite number (NaN/Inf outputs rank as the worst), for ranking layers."""
    return min(error["error"], 1e6)


def fallback_to_float(full, budget: float, make_trial: Callable, time_limit_s: float = SENSITIVITY_S,
                      probe: Optional[Callable] = None, saved: Optional[dict] = None) -> tuple[Optional[object], dict]:
    """(the trial that meets `budget` with the fewest float layers, or None; a report dict). The
    leave-one-out sensitivity stops after `time_limit_s` (one quantize-and-run per layer took 146 s
    on EfficientNet-Lite0's 50 layers here); layers not measured by then rank last, in graph order.
    `saved`: ms int8 saves per layer (layer_times.py): layers then go float in order of accuracy
    gained per millisecond given up, so the budget is spent where int8 saves least."""
    base = _capped(full.error)
    if probe is not None:   # gains are measured by the probe (no bias correction): against its own baseline
        start = probe(full.exclude)
        probe_base = _capped(start.error) if start is not None else base
    else:
        probe_base = base
    ranking, deadline = [], time.perf_counter() + time_limit_s
    for node in full.weighted:
        if time.perf_counter() > deadline:
            ranking.append((float("-inf"), node))
            continue
        trial = (probe or make_trial)(full.exclude + (node,))
        gain = probe_base - _capped(trial.error) if trial is not None else probe_base
        ranking.append((gain, node))
    measured = sum(1 for gain, _ in ranking if gain != float("-inf"))
    ranking.sort(key=lambda item: (*_rank(item[0], saved.get(item[1]) if saved else None),
                                   full.weighted.index(item[1])))
    order = [node for _, node in ranking]
    report = {"start": full.scheme, "error_all_int8": round(base, 6),
              "sensitivity": [{"node": n, "cosine_gain_if_float": round(g, 6),
                               **({"int8_saves_ms": saved[n]} if saved and n in saved else {})}
                              for g, n in ranking[:40] if g != float("-inf")]}
    if saved:
        report["order"] = "accuracy gained per ms int8 saves (measured layer times)"
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
