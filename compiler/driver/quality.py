"""What a compile costs in quality, stated beside its size and speed (issue 29): in the metric the
user named (metric="top1", metric="cosine", or a function over eval_data), else in output error
(1 - mean cosine), with the samples it was measured on. A lossy change the user asked for by amount
(prune=, sparsity=, a forced quantize=) has no budget of its own: it is held to LOSS_TOLERANCE, and
a loss beyond it is warned about (or refused, strict=True) with where in the graph it arose."""
from __future__ import annotations

import warnings
from typing import Optional

import numpy as np

from hewn.core.errors import HewnWarning, VerificationError

LOSS_TOLERANCE = 0.05     # a change asked for by amount may cost this much (1 - the metric) unwarned
NAMED_METRICS = {"cosine": "output cosine", "top1": "top-1 agreement", "boxes": "box F1 against the original's boxes"}
DRIFT_ROWS = 8            # the tensors the report shows, in graph order, where outputs drift


def quality(verification: dict, plan_final: Optional[dict], metric, judged: str = "") -> dict:
    """{metric, value, error, samples, inputs, words, judged_by}: the figure the outcome line states,
    and how the outputs were judged and why (output_roles.judged_by)."""
    out = _quality(verification, plan_final, metric)
    if judged:
        out["judged_by"] = judged
    return out


def _quality(verification: dict, plan_final: Optional[dict], metric) -> dict:
    samples = verification["samples"]
    seen = verification.get("inputs") or f"{samples} verification sample(s) spread over calib_data (seen by calibration)"
    where = "held-out " if verification.get("held_out") else ""
    if not verification.get("lossy_passes"):
        named = {"top1": "top-1 agreement 100%", "cosine": "output cosine 1.0000"}.get(metric, "outputs equal the input's")
        return {"metric": metric or "lossless", "value": 1.0 if metric else None, "error": 0.0, "samples": samples,
                "inputs": seen, "words": f"{named} (lossless, {samples} {where}samples)"}
    if plan_final is not None and "metric" in plan_final:   # the user's own function, over eval_data
        return {"metric": "metric=", "value": plan_final["metric"], "original": plan_final["metric_original"],
                "error": plan_final["error"], "samples": plan_final["samples"], "inputs": plan_final["inputs"],
                "words": f"metric= {plan_final['metric_original']:.4g} -> {plan_final['metric']:.4g} "
                         f"on {plan_final['samples']} samples"}
    if "task_score" in verification:   # metric="boxes" or a function (reference_outputs, outputs) -> score
        value = float(verification["task_score"])
        name = verification.get("task_name") or "metric="
        return {"metric": name, "value": round(value, 6), "error": round(1 - value, 6), "samples": samples,
                "inputs": seen, "words": f"{name} {value:.4f} on {samples} {where}samples"}
    if metric in ("top1", None) and "top1_agreement" in verification:   # only class-score outputs have it
        value = float(verification["top1_agreement"])
        low, high = wilson(value, samples)
        return {"metric": "top1", "value": round(value, 6), "error": round(1 - value, 6), "samples": samples,
                "interval_95": [round(low, 4), round(high, 4)], "inputs": seen,
                "words": f"top-1 agreement {value:.1%} (95% interval {low:.1%}-{high:.1%}) on {samples} {where}samples"}
    value = float(verification["mean_cosine"])
    if metric == "cosine":
        return {"metric": "cosine", "value": round(value, 6), "error": round(1 - value, 6), "samples": samples,
                "inputs": seen, "words": f"output cosine {value:.4f} on {samples} {where}samples"}
    error = float(verification["error"])   # what budgets are checked against: 1 - cosine, or a rescale / lost channel
    return {"metric": "output error", "value": round(error, 6), "error": round(error, 6), "samples": samples,
            "inputs": seen, "words": f"output error {error:.3g} (cosine {value:.4f}) on {samples} {where}samples",
            "hint": "no metric= given: output error; metric='top1' (class scores) or 'cosine' states the task's own"}


def wilson(rate: float, n: int, z: float = 1.96) -> tuple[float, float]:
    """The 95% Wilson score interval of an agreement rate over n samples (8 samples at 100%: 68-100%)."""
    if n <= 0:
        return 0.0, 1.0
    centre = (rate + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * np.sqrt(rate * (1 - rate) / n + z * z / (4 * n * n))
    return max(0.0, float(centre - half)), min(1.0, float(centre + half))


def lm_quality(verification: dict, weights: Optional[dict]) -> dict:
    """A causal LM's quality: calibration perplexity against the float model's (the outcome's weights
    clause already states it), or lossless when only the decoder fusions ran."""
    if not weights:
        return quality(verification, None, None)
    rise = weights["perplexity"] / weights["float_perplexity"] - 1
    return {"metric": "perplexity", "value": weights["perplexity"], "original": weights["float_perplexity"],
            "error": round(rise, 6), "samples": weights.get("calibration_windows"),
            "inputs": f"{weights.get('calibration_tokens')} calibration tokens (seen by the search)",
            "words": f"calibration perplexity {weights['float_perplexity']:.3f} -> {weights['perplexity']:.3f}"}


def hold_to_tolerance(q: dict, unbudgeted: list, strict: bool, diagnose) -> None:
    """A change asked for by amount that lost more than LOSS_TOLERANCE: the warning (and, strict,
    the refusal) says what it cost, where the outputs start to drift, and what would recover it."""
    if not unbudgeted or q["error"] <= LOSS_TOLERANCE:
        return
    q["tolerance"] = LOSS_TOLERANCE
    recover = []
    if any(n.startswith("prune") or n == "torch_structure" for n in unbudgeted):
        recover.append("a smaller prune=")
        recover.append("train_data= (distillation from the original wins accuracy back)")
    if "sparsify" in unbudgeted:
        recover.append("a smaller sparsity=")
    recover.append("accuracy_budget= instead of a fixed amount (the planner chooses per layer under it)")
    q["drift"] = diagnose()
    where = ""
    first = next((r for r in q["drift"] if r["cosine"] < 1 - LOSS_TOLERANCE), None)
    if first is not None:
        where = f"; outputs first drift at {first['tensor']} ({first['op']}, cosine {first['cosine']:.3f})"
    q["warning"] = (f"QUALITY LOST: {', '.join(unbudgeted)} cost {q['words']}, beyond the {LOSS_TOLERANCE:g} "
                    f"a change asked for by amount may cost{where}. Try {'; or '.join(recover)}")
    if strict:
        raise VerificationError(q["warning"] + ". strict=True: no model was returned or written")
    warnings.warn(q["warning"], HewnWarning, stacklevel=4)


def drift(original, compiled, feeds, limit: int = DRIFT_ROWS) -> list[dict]:
    """Cosine to the original of each tensor both models still share with the same shape (block
    outputs, pooled features: a pruned layer's own output has other widths), in graph order: the
    first rows below 1 show where the loss enters. At most `limit` rows: the first drifting ones
    and a spread of the rest."""
    import onnx_graphsurgeon as gs

    from hewn.core.measure import output_error
    from hewn.passes.quant.diagnosis import _run_with_outputs

    def produced(model) -> dict:   # {tensor: op} of what the nodes compute, in graph order
        return {t.name: n.op for n in gs.import_onnx(model).nodes for t in n.outputs
                if t.name and isinstance(t, gs.Variable) and n.op not in ("Constant", "Shape")}

    theirs, ours = produced(original), produced(compiled)
    common = [n for n in ours if n in theirs]
    if not common:
        return []
    feeds = feeds[:4]
    try:
        ref, got = _run_with_outputs(original, common, feeds), _run_with_outputs(compiled, common, feeds)
    except Exception:  # noqa: BLE001 - a diagnosis; the compile's own verification already passed
        return []
    rows = []
    for name in common:
        if not all(np.issubdtype(np.asarray(r).dtype, np.floating) for r in ref[name]):
            continue
        err = output_error([[r] for r in ref[name]], [[g] for g in got[name]])   # the verification's own cosine
        if not err.get("shape_mismatch"):
            rows.append({"tensor": name, "op": ours[name], "cosine": round(err["mean_cosine"], 4)})
    drifting = [i for i, r in enumerate(rows) if r["cosine"] < 1 - LOSS_TOLERANCE][:limit // 2]
    spread = np.linspace(0, len(rows) - 1, min(len(rows), limit - len(drifting))).astype(int).tolist()
    return [rows[i] for i in sorted(set(drifting) | set(spread))]


__all__ = ["quality", "wilson", "lm_quality", "hold_to_tolerance", "drift", "LOSS_TOLERANCE", "NAMED_METRICS"]
