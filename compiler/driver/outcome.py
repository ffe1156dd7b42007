"""What the compile gained, in one sentence, and what would help when it gained nothing: a float
cleanup that returns the same model must say so, not look like a success."""
from __future__ import annotations

import math

from hewn.core.speed import is_faster
from hewn.driver.options import Options

SMALLER = 0.99   # a file at least 1% smaller counts as smaller


def outcome(report: dict, opts: Options) -> dict:
    before, after = report["file_bytes"]["before"], report["file_bytes"]["after"]
    smaller = after < before * SMALLER
    lat = report.get("latency")
    # the rule speed_words uses: beyond 3% and beyond the timings' own spread
    faster = None if lat is None else is_faster(lat["before_ms"], lat["after_ms"], lat.get("spread", 0.0))
    size = f"{before / 1e6:.2f} MB -> {after / 1e6:.2f} MB"
    if before:
        change = (after - before) / before
        size += f" ({change:+.0%})" if abs(change) >= 0.01 else f" ({change:+.1%})"
    if lat:
        speed = lat["speed"]
    elif not opts.measure_latency:
        speed = "latency not measured (measure_latency=False)"
    else:
        speed = f"latency not measured: target {opts.profile.name} runs elsewhere than this machine's ONNX Runtime"
    gained = smaller or faster
    q = report.get("quality")
    if q is not None and q["metric"] != "perplexity":   # what it cost (a causal LM's: in the weights clause)
        speed += f", {q['words']}"
    summary = f"{size}, {speed}" if gained else f"nothing applied pays on this model: {size}, {speed}"
    if q is not None and q.get("warning"):
        summary = f"QUALITY LOST ({q['error']:.3g} > {q['tolerance']:g}): {summary}"
    if report.get("weights"):
        summary += "; " + _weights_summary(report["weights"])
    if report.get("returned_input"):
        summary = f"nothing applied pays on this model: {report['returned_input']['why']}"
    result = {"smaller": smaller, "faster": faster, "summary": summary}
    advice = _advice(report, opts)
    if advice and (not gained or faster is False):
        result["advice"] = advice
    return result


def _weights_summary(weights: dict) -> str:
    """A causal LM's weight-only result: bits per weight and the perplexity against its budget."""
    rise = weights["perplexity"] / weights["float_perplexity"] - 1
    missed = ("; BUDGET MISSED: " + weights["over_budget"]) if weights.get("over_budget") else ""
    return (f"weights {weights['bits'].get('4', 0)} at 4-bit, {weights['bits'].get('8', 0)} at 8-bit; calibration "
            f"perplexity {weights['float_perplexity']:.3f} -> {weights['perplexity']:.3f} ({percent(rise, True)}, "
            f"budget +{percent(weights['budget'])}){missed}")


def percent(share: float, sign: bool = False) -> str:
    """A share as a percentage with the digits it needs: 0.001 is 0.1%, not 0%."""
    value = share * 100
    digits = 1 if abs(value) >= 1 or value == 0 else max(1, -int(math.floor(math.log10(abs(value)))))
    return f"{value:+.{digits}f}%" if sign else f"{value:.{digits}f}%"


def _advice(report: dict, opts: Options) -> list[str]:
    if opts.lm is not None:   # a decoder: the int8 / planner advice is about the other route
        return []
    advice = []
    q = report.get("quantization")
    quantized = any(op in report["before"].get("ops", {}) for op in ("DequantizeLinear", "MatMulInteger",
                                                                     "QLinearConv", "MatMulNBits"))
    if quantized:  # already quantized: int8 advice would change nothing
        pass
    elif opts.quantize is None and opts.profile.quant_schemes:
        advice.append("pass calib_data= (CLI: --calib) with 100-1000 real inputs: int8 needs them to measure "
                      "activation ranges")
    elif q is not None and "chosen" not in q:
        why = q.get("kept_float", "no layer could be quantized")
        advice.append(f"int8 was not applied ({why}); a larger accuracy_budget=, or exclude= for the layers "
                      f"`hewn explain` lists, may let it")
    if not opts.planning and opts.prune is None and opts.passes is None:
        advice.append("accuracy_budget= (CLI: --budget) turns on the planner: channel pruning and low-rank "
                      "splits per layer, then int8, under one accuracy budget")
    return advice
