"""compile() for causal LMs: KV-cache export (torch) or a KV-cache ONNX file, then weight-only
compression under a perplexity budget (weights.py), measured on the user's calibration text.

calib_data is text (strings, tokenized with `tokenizer`) or token ids (1-D arrays / lists); the
tokens are cut into windows of up to WINDOW tokens. accuracy_budget is the allowed relative
perplexity increase on those windows (default 0.05 = +5%).
"""
from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
import onnx

from hewn.core.errors import ConfigError
from hewn.core.runtime import file_session
from hewn.core.speed import is_slower, speed_words
from hewn.core.storage import finite_json
from hewn.core.version import installed_version
from hewn.core.kv_cache import CacheLayout, example_feeds
from hewn.frontends.causal_lm import export_causal_lm, is_causal_lm
from hewn.core.kv_cache import layout_from_onnx
from hewn.frontends.lm_text import token_windows
from hewn.frontends.causal_lm_check import check_logits
from hewn.passes.quant.weight_only.search import Prepared, WeightConfig

PREFILL, LATENCY_ROUNDS = 64, 7
DEFAULT_BUDGET = 0.05


def compile_causal_lm(model, target: str = "cpu", *, calib_data=None, tokenizer=None, accuracy_budget=None,
                      output=None, progress=None, measure_latency=True):
    from hewn.driver.result import CompiledModel

    if str(target) != "cpu":
        raise ConfigError(f"causal-LM weight compression emits MatMulNBits for ONNX Runtime's CPU kernels; "
                          f"target {target!r} is not supported for it yet: use target='cpu'")
    budget = DEFAULT_BUDGET if accuracy_budget is None else float(accuracy_budget)
    started = time.perf_counter()
    say = progress or (lambda msg: None)
    calib = token_windows(calib_data, tokenizer)
    frontend: dict = {}
    with tempfile.TemporaryDirectory(prefix="hewn-lm-") as tmp:
        if is_causal_lm(model):
            path = str(Path(tmp) / "float.onnx")
            layout = export_causal_lm(model, path)
            frontend["export_check"] = check_logits(model, file_session(path, threads=2), layout)
            frontend["exporter"] = "torch.onnx.export (TorchScript) with a DynamicCache rebuilt from flat past tensors"
            protect = []
        else:
            path = str(model)
            if isinstance(model, onnx.ModelProto):
                path = str(Path(tmp) / "input.onnx")
                onnx.save(model, path)
            layout = layout_from_onnx(onnx.load(path, load_external_data=False))
            protect = [Path(path)]
        before = _model_bytes(path)
        plan = Prepared(path, layout, calib, WeightConfig(budget=budget), say).choose(budget)
        latency = None
        if measure_latency:
            compiled = Path(tmp) / "compiled.onnx"
            onnx.save(plan.model, compiled)
            latency = time_both(path, str(compiled), layout)
    after = plan.model.ByteSize()
    report = {"target": {"name": "cpu", "description": "ONNX Runtime CPU EP (MatMulNBits / GatherBlockQuantized)"},
              "hewn_version": installed_version(), "compile_seconds": round(time.perf_counter() - started, 1),
              "frontend": {**frontend, "layout": layout.__dict__}, "fusions": plan.report.get("fusions", {}),
              "weights": plan.report,
              "file_bytes": {"before": before, "after": after},
              "outcome": {"summary": _summary(before, after, plan.report)}}
    if latency is not None:
        report["latency"] = latency
        report["outcome"]["summary"] += f"; decode {latency['decode']['speed']}, prefill {latency['prefill']['speed']}"
    result = CompiledModel(plan.model, finite_json(report), protect=protect)
    if output is not None:
        result.save(output)
    return result


def _model_bytes(path: str) -> int:
    """The model file and the external data files it refers to."""
    folder = Path(path).parent
    locations = {e.value for t in onnx.load(path, load_external_data=False).graph.initializer
                 for e in t.external_data if e.key == "location"}
    return Path(path).stat().st_size + sum((folder / loc).stat().st_size for loc in locations if (folder / loc).is_file())


def time_both(before_path: str, after_path: str, layout: CacheLayout, rounds: int = LATENCY_ROUNDS) -> dict:
    """A PREFILL-token prefill and one decode step after a PREFILL-token past, both models timed
    interleaved (2 threads, medians). A compiled model slower at both gets a warning."""
    sessions = [file_session(before_path, threads=2), file_session(after_path, threads=2)]
    feeds = {"prefill": example_feeds(layout, 1, 0, PREFILL), "decode": example_feeds(layout, 1, PREFILL, 1)}
    times = {k: ([], []) for k in feeds}
    for r in range(rounds + 1):
        for kind, f in feeds.items():
            for i, s in enumerate(sessions):
                t = time.perf_counter()
                s.run(["logits"], f)
                if r:  # the first round warms up
                    times[kind][i].append(time.perf_counter() - t)
    out = {}
    for kind, (a, b) in times.items():
        before_ms, after_ms = float(np.median(a)) * 1e3, float(np.median(b)) * 1e3
        out[kind] = {"before_ms": round(before_ms, 3), "after_ms": round(after_ms, 3),
                     "ratio": round(after_ms / before_ms, 3), "speed": speed_words(before_ms, after_ms)}
    if all(is_slower(out[k]["before_ms"], out[k]["after_ms"]) for k in out):
        out["warning"] = ("the compressed model measured slower than the float one at both prefill and decode on "
                          "this machine; it is smaller, so it is returned, but check the kernels ORT picked")
    out["tokens"] = PREFILL
    return out


def _summary(before: int, after: int, weights: dict) -> str:
    rise = weights["perplexity"] / weights["float_perplexity"] - 1
    return (f"{before / 1e6:.1f} MB -> {after / 1e6:.1f} MB ({after / before - 1:+.0%}); weights "
            f"{weights['bits'].get('4', 0)} at 4-bit, {weights['bits'].get('8', 0)} at 8-bit; calibration perplexity "
            f"{weights['float_perplexity']:.3f} -> {weights['perplexity']:.3f} ({rise:+.1%}, budget +{weights['budget']:.0%})")


__all__ = ["compile_causal_lm", "time_both"]
