"""The report: what changed, what it cost, what was left intact and why (JSON; report_html renders it)."""
from __future__ import annotations

import time

from hewn.core.external import external_bytes
from hewn.driver.options import Options
from hewn.driver.run import OnnxRun
from hewn.frontends.source import Source

# report key -> the pass whose stats it shows
PASS_SECTIONS = (("pruning", "prune_channels"), ("quantization", "quantize"), ("plan", "plan_structure"),
                 ("sparsity", "sparsify"), ("fusion", "fuse_transformer"), ("attention", "fuse_attention"),
                 ("float16", "float16"), ("op_support", "check_op_support"), ("static_shapes", "static_shapes"),
                 ("weights", "weight_only"))


def build_report(source: Source, run: OnnxRun, verification: dict, opts: Options, torch_report, started: float) -> dict:
    profile, records = opts.profile, run.records
    report = {
        "hewn_version": run.model.producer_version,
        "target": profile.as_dict(),
        "frontend": source.info,
        "before": run.before,
        "after": run.after,
        "passes": [r.as_dict() for r in records],
        "pass_seconds": {k: round(v, 4) for k, v in run.seconds.items()},
        "left_intact": run.ctx.notes,
        "lossy_passes": run.ctx.measurements,
        "verification": verification,
        "compile_seconds": round(time.perf_counter() - started, 3),
        "runtime_options": dict(profile.session_options),
    }
    skipped = [{"pass": r.name, "error": r.error, "after": [p.name for p in records[:i] if not p.error]}
               for i, r in enumerate(records) if r.error]
    if skipped:
        report["skipped_passes"] = skipped
    if run.storage is not None:
        report["sparse_storage"] = run.storage
    report["file_bytes"] = {"before": source.model.ByteSize() + external_bytes(source.model),
                            "after": run.model.ByteSize() + external_bytes(run.model)}
    for key, pass_name in PASS_SECTIONS:
        stats = next((r.stats for r in records if r.name == pass_name), None)
        if stats is not None:
            report[key] = stats
    fusions = _decoder_fusions(records)
    if fusions:
        report["fusions"] = fusions
    if torch_report is not None:
        report.update(torch_report)
    quant = report.get("quantization")
    if quant and quant.get("layers"):  # what the emitted graph runs, after every later pass
        from hewn.passes.quant.diagnosis import emitted_precision

        quant["layers"] = emitted_precision(run.model, quant["layers"])
    return report


# decoder pass -> (its name in report["fusions"], what each rewritten pattern becomes)
DECODER_FUSIONS = {"constant_reshape_targets": ("reshape", "Reshape with a constant target"),
                   "fuse_cached_attention": ("attention", "Attention node (opset 23)"),
                   "fuse_rotary": ("rotary", "RotaryEmbedding node (opset 23)"),
                   "fuse_gelu_tanh": ("gelu", "Gelu(approximate=tanh) node (opset 20)")}


def _decoder_fusions(records) -> dict:
    """A causal LM's decoder fusions by name: what each rewrote, into what, what it left and why,
    and why one was dropped (the manager's check of lossless passes rolled it back, or it failed)."""
    out = {}
    for r in records:
        if r.name not in DECODER_FUSIONS:
            continue
        name, into = DECODER_FUSIONS[r.name]
        entry = {**r.stats, "into": into}
        if r.rolled_back or r.error:
            entry.update(fused=0, dropped=r.rolled_back or f"could not be built or run: {r.error}")
        out[name] = entry
    return out
