"""What compile() checks before it returns a model: onnx.checker, an ORT session, outputs against
the original's (lossless: to the target's tolerance; lossy: measured), the planner's budget on
held-out data, and latency on this machine."""
from __future__ import annotations

import onnx

from hewn.core.errors import HewnError, VerificationError
from hewn.core.ir import validate
from hewn.core.pass_infra import Reference
from hewn.core.runtime import compare, input_specs, make_session, output_error, run_all, time_interleaved, to_feeds
from hewn.frontends.from_onnx import samples

LATENCY_RUNS = 20


def verify(model: onnx.ModelProto, reference: Reference, profile, lossy: list) -> dict:
    """Without lossy passes the outputs must match to the target's tolerance (else raise);
    with them, the error is reported."""
    try:
        validate(model, "the compiled model")
    except HewnError as exc:
        raise VerificationError(f"hewn produced an invalid model (a bug, please report it): {exc}") from None
    outputs = run_all(make_session(model), reference.feeds)
    checks = {"onnx_checker": "passed", "ort_session": "loaded", "samples": len(reference.feeds)}
    if lossy:
        return {**checks, "lossy_passes": lossy, **output_error(reference.outputs, outputs)}
    cmp = compare(reference.outputs, outputs, rtol=profile.verify_rtol, atol=profile.verify_atol)
    if not cmp.passed:
        raise VerificationError(
            f"the compiled model's outputs differ from the original's beyond the lossless tolerance "
            f"(max abs error {cmp.max_abs:.3g}, rtol {profile.verify_rtol}); no output was written"
        )
    return {**checks, "rtol": profile.verify_rtol, "atol": profile.verify_atol, **cmp.as_dict()}


def final_check(model, original, budget, reference, eval_data, metric) -> dict:
    """The compiled model against the original on held-out data (eval_data, else the verification
    inputs): the error the budget is about, and a statement when it was missed."""
    from hewn.passes.planner.statement import statement

    if eval_data is not None:
        specs = input_specs(original)
        feeds = [to_feeds(s, specs, f"eval_data[{i}]") for i, s in enumerate(samples(eval_data))]
        ref = run_all(make_session(original), feeds)
    else:
        feeds, ref = reference.feeds, reference.outputs
    outs = run_all(make_session(model), feeds)
    err = output_error(ref, outs)
    result = {"samples": len(feeds), "cosine": round(err.get("mean_cosine", 0.0), 6)}
    if metric is not None:
        result.update({"metric_original": float(metric(ref)), "metric": float(metric(outs))})
        result["error"] = round(max(0.0, result["metric_original"] - result["metric"]), 6)
    else:
        result["error"] = round(max(0.0, 1 - err.get("mean_cosine", 0.0)), 6)
    result["budget"] = budget
    result["budget_met"] = result["error"] <= budget + 1e-12
    text = statement(budget, result["error"])
    if text:
        result["statement"] = text
    return result


def latency(original: onnx.ModelProto, compiled: onnx.ModelProto, feed: dict) -> dict:
    """Median batch-1 latency of both models in ORT on this machine, timed interleaved."""
    sessions = [make_session(original, threads=2), make_session(compiled, threads=2)]
    # big models: fewer runs within 3 s, not a long compile
    (before, after), runs = time_interleaved(sessions, feed, LATENCY_RUNS, warmup=1, budget_s=3.0)
    return {"before_ms": round(before * 1e3, 4), "after_ms": round(after * 1e3, 4),
            "speedup": round(before / after, 3), "runs": runs,
            "how": "ORT CPU EP, 2 threads, batch of the first verification input, median, interleaved (<= 3 s)"}
