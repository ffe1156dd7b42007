"""What compile() checks before it returns a model: onnx.checker, an ORT session, outputs against
the original's (lossless: to the target's tolerance; lossy: measured), the planner's budget on
held-out data, and latency on this machine."""
from __future__ import annotations

import statistics
import time
import warnings
from typing import Optional

import numpy as np
import onnx

from hewn.core.errors import HewnError, HewnWarning, VerificationError
from hewn.core.ir import validate
from hewn.core.pass_infra import Reference
from hewn.core.measure import compare, output_error
from hewn.core.runtime import input_specs, make_session, run, run_all, timings, to_feeds, watched
from hewn.core.speed import compared_to, is_slower, speed_words
from hewn.frontends.from_onnx import samples
from hewn.passes.planner.statement import statement

LATENCY_RUNS = 40


def stated_budget(opts, lossy: list) -> Optional[float]:
    """The output error the user or the target stated for this compile, when one covers every lossy
    change: quantization's budget plus the target's stated cost of its own lossy passes (cuda's fp16
    remainder). None when the planner decides (final_check holds it to the budget) or when a change
    the user asked for by amount (prune=, sparsity=) has no budget."""
    if opts.planning or opts.passes is not None:
        return None
    own = {p if isinstance(p, str) else p[0] for p in opts.profile.finish}
    if any(name != "quantize" and name not in own for name in lossy):
        return None
    budget = opts.quantize.budget if "quantize" in lossy else 0.0
    return budget + (opts.profile.stated_budget if own & set(lossy) else 0.0)


def verify(model: onnx.ModelProto, reference: Reference, profile, lossy: list, budget: Optional[float] = None) -> dict:
    """Without lossy passes the outputs must match to the target's tolerance (else raise); with
    them, each output is measured by what fits its dtype. NaN/Inf where the original's outputs are
    finite is a failure; a missed `budget` is stated in the report and warned about."""
    try:
        validate(model, "the compiled model", allow_empty=True)
    except HewnError as exc:
        raise VerificationError(f"hewn produced an invalid model (a bug, please report it): {exc}") from None
    outputs = run_all(make_session(model), reference.feeds)
    checks = {"onnx_checker": "passed", "ort_session": "loaded", "samples": len(reference.feeds)}
    if lossy:
        err = reference.error(outputs)
        if err.get("shape_mismatch") or err.get("nonfinite"):
            what = "changed shape" if err.get("shape_mismatch") else f"hold {err['nonfinite']} NaN/Inf value(s)"
            raise VerificationError(
                f"the compiled model's outputs {what} where the original's are finite (after {', '.join(lossy)}); "
                f"no model was returned or written. Compile without those passes, or report the model")
        result = {**checks, "lossy_passes": lossy, **err}
        if budget is not None:
            result.update({"budget": budget, "budget_met": err["error"] <= budget + 1e-12})
            if not result["budget_met"]:
                result["statement"] = (f"the compiled model's output error {err['error']:.4g} is over the stated "
                                       f"budget {budget:g} ({', '.join(lossy)}); it is returned so you can inspect it")
                warnings.warn(result["statement"], HewnWarning, stacklevel=3)
        return result
    cmp = compare(reference.outputs, outputs, rtol=profile.verify_rtol, atol=profile.verify_atol)
    if not cmp.passed:
        raise VerificationError(
            f"the compiled model's outputs differ from the original's beyond the lossless tolerance "
            f"(max abs error {cmp.max_abs:.3g}, rtol {profile.verify_rtol}); no output was written"
        )
    return {**checks, "rtol": profile.verify_rtol, "atol": profile.verify_atol, **cmp.as_dict()}


def final_check(model, original, budget, reference, eval_data, metric) -> dict:
    """The compiled model against the original on eval_data (held out: calibration never saw it),
    else on the verification inputs (spread over all of calib_data, which calibration did see):
    the error the budget is about, the inputs it was measured on, and a statement when it was missed."""
    if eval_data is not None:
        specs = input_specs(original)
        feeds = [to_feeds(s, specs, f"eval_data[{i}]") for i, s in enumerate(samples(eval_data, "eval_data"))]
        ref = run_all(make_session(original), feeds)
        inputs = f"{len(feeds)} eval_data samples (held out)"
    else:
        feeds, ref = reference.feeds, reference.outputs
        inputs = (f"the {len(feeds)} verification inputs (not held out: pass eval_data= for samples calibration "
                  f"never saw)")
    outs = run_all(make_session(model), feeds)
    err = output_error(ref, outs, reference.classes)
    result = {"samples": len(feeds), "inputs": inputs, "cosine": round(err.get("mean_cosine", 0.0), 6)}
    if metric is not None:
        result.update({"metric_original": float(metric(ref)), "metric": float(metric(outs))})
        result["error"] = round(max(0.0, result["metric_original"] - result["metric"]), 6)
    else:
        result["error"] = round(err["error"], 6)
    result["budget"] = budget
    result["budget_met"] = result["error"] <= budget + 1e-12
    text = statement(budget, result["error"])
    if text:
        result["statement"] = text
    return result


def latency(original: onnx.ModelProto, compiled: onnx.ModelProto, feed: dict, budget_s: float = 5.0) -> dict:
    """Median latency of both models in ORT on this machine, timed interleaved with spinning off
    (as `hewn bench` times them), with the spread (interquartile range / median) of each."""
    sessions = [make_session(original, threads=2), make_session(compiled, threads=2)]
    # big models: fewer runs within 5 s, not a long compile
    runs = LATENCY_RUNS if budget_s <= 5.0 else 4 * LATENCY_RUNS
    before, after = timings(sessions, feed, runs, warmup=3, budget_s=budget_s)
    (b, b_spread), (a, a_spread) = _median_spread(before), _median_spread(after)
    result = {"before_ms": round(b * 1e3, 4), "after_ms": round(a * 1e3, 4), "speedup": round(b / a, 3),
              "speed": speed_words(b, a, max(b_spread, a_spread)), "spread": round(max(b_spread, a_spread), 3), "runs": len(before),
              "how": f"ORT CPU EP, 2 threads, spinning off, the first verification input, median of interleaved "
                     f"runs (<= {budget_s:g} s); spread = interquartile range / median"}
    if is_slower(b, a, result["spread"]):
        result["slower"] = True
        result["warning"] = (f"the compiled model measured {compared_to(b, a, 'the input')} on this machine: "
                             f"deploy the input model, or see 'advice'")
    return result


def _median_spread(times: list[float]) -> tuple[float, float]:
    ordered = sorted(times)
    n = len(ordered)
    median = statistics.median(ordered)
    q1, q3 = ordered[n // 4], ordered[min(n - 1, (3 * n) // 4)]
    return median, (q3 - q1) / median if median > 0 else 0.0


GREEDY_PROMPTS, GREEDY_PROMPT_TOKENS, GREEDY_NEW_TOKENS = 2, 16, 16
DECODER_PREFILL, DECODER_ROUNDS = 64, 7


def greedy_agreement(original: onnx.ModelProto, compiled: onnx.ModelProto, layout, windows: list) -> dict:
    """Greedy generation from both models through their KV caches, from the first tokens of the
    first calibration windows: how many of the new tokens agree before the first difference."""
    from hewn.core.kv_cache import Decoder

    tokens = np.concatenate(windows)   # prompts spread over all of the calibration text
    starts = np.linspace(0, max(0, len(tokens) - GREEDY_PROMPT_TOKENS), GREEDY_PROMPTS).astype(int)
    prompts = [tokens[s:s + GREEDY_PROMPT_TOKENS] for s in dict.fromkeys(starts.tolist())]
    ours, theirs = Decoder(make_session(compiled, threads=2), layout), Decoder(make_session(original, threads=2), layout)
    rows = []
    for ids in prompts:
        a, b = theirs.generate(ids[None], GREEDY_NEW_TOKENS)[0], ours.generate(ids[None], GREEDY_NEW_TOKENS)[0]
        same = a == b
        rows.append(int(same.argmin()) if not same.all() else len(same))
    return {"prompts": len(prompts), "new_tokens": GREEDY_NEW_TOKENS, "equal_prefix": rows,
            "agreement": round(sum(rows) / max(1, GREEDY_NEW_TOKENS * len(rows)), 4),
            "how": f"greedy continuation of {GREEDY_PROMPT_TOKENS}-token prompts spread over the calibration text; tokens "
                   f"equal to the float model's before the first difference"}


def decoder_latency(original: onnx.ModelProto, compiled: onnx.ModelProto, layout) -> dict:
    """A DECODER_PREFILL-token prefill and one decode step after a DECODER_PREFILL-token past,
    both models timed interleaved (2 threads, medians). The decode step is what `speedup` and
    `speed` state (it is most of generation); a model slower at both gets a warning."""
    from hewn.core.kv_cache import example_feeds

    sessions = [make_session(original, threads=2), make_session(compiled, threads=2)]
    feeds = {"prefill": example_feeds(layout, 1, 0, DECODER_PREFILL), "decode": example_feeds(layout, 1, DECODER_PREFILL, 1)}
    times = {k: ([], []) for k in feeds}
    for r in range(DECODER_ROUNDS + 1):
        for kind, f in feeds.items():
            for i, session in enumerate(sessions):
                t = time.perf_counter()
                (watched if r else run)(session, ["logits"], f)   # the warm-up round can be interrupted
                if r:  # the first round warms up
                    times[kind][i].append(time.perf_counter() - t)
    out: dict = {}
    for kind, (a, b) in times.items():
        before_ms, after_ms = float(np.median(a)) * 1e3, float(np.median(b)) * 1e3
        out[kind] = {"before_ms": round(before_ms, 3), "after_ms": round(after_ms, 3),
                     "ratio": round(after_ms / before_ms, 3), "speed": speed_words(before_ms, after_ms)}
    decode = out["decode"]
    out.update(before_ms=decode["before_ms"], after_ms=decode["after_ms"],
               speedup=round(decode["before_ms"] / decode["after_ms"], 3),
               speed=f"decode {decode['speed']}, prefill {out['prefill']['speed']}", tokens=DECODER_PREFILL,
               how=f"ORT CPU EP, 2 threads; a {DECODER_PREFILL}-token prefill and a decode step after a "
                   f"{DECODER_PREFILL}-token past, medians of {DECODER_ROUNDS} interleaved rounds")
    if all(is_slower(out[k]["before_ms"], out[k]["after_ms"]) for k in ("prefill", "decode")):
        out["warning"] = ("the compressed model measured slower than the float one at both prefill and decode on "
                          "this machine; it is smaller, so it is returned, but check the kernels ORT picked")
    return out
