"""Decoder fusions for the cpu target, each verified against the unfused graph in ONNX Runtime.

A fusion that changes the logits or the cache beyond float tolerance at any checked size is
dropped, and the report says so; the graph stays as it was exported.
"""
from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
from hewn.core.runtime import release_memory, session_options
from hewn.frontends.causal_lm import CacheLayout, example_feeds
from hewn.passes.fusion.fuse_cached_attention import fuse_cached_attention

# prefill, one decode step, a batch with a past, a past longer than small sliding windows
SIZES = ((1, 0, 7), (1, 7, 1), (2, 5, 3), (1, 40, 2))
TOLERANCE = 1e-4     # relative to the largest value of each output


def fuse_decoder(model: onnx.ModelProto, folder: str, layout: CacheLayout, threads: int = 2) -> tuple[onnx.ModelProto, dict]:
    """`model` (weights maybe external in `folder`, never read here) with its attention fused, and
    a report: what was fused, what was left and why, and the verification."""
    fused, report = fuse_cached_attention(onnx.ModelProto.FromString(model.SerializeToString()))
    if not report["fused"]:
        return model, {"attention": report}
    try:
        checks = _compare(model, fused, folder, layout, threads)
    except Exception as exc:  # noqa: BLE001 - ORT refusing the fused graph leaves the model as it was
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return model, {"attention": {**report, "fused": 0, "dropped": f"ONNX Runtime could not run it: {first}"}}
    worst = max(c["max_rel_error"] for c in checks)
    if not worst <= TOLERANCE:
        return model, {"attention": {**report, "fused": 0, "checks": checks,
                                     "dropped": f"outputs differ from the unfused graph by {worst:.1e} > {TOLERANCE}"}}
    return fused, {"attention": {**report, "checks": checks}}


def fusion_summary(report: dict) -> str:
    att = report.get("attention", {})
    if att.get("dropped"):
        return f"attention not fused: {att['dropped']}"
    left = f", {len(att['left'])} left ({att['left'][0]['reason']})" if att.get("left") else ""
    return f"{att.get('fused', 0)} attention blocks -> Attention (opset 23){left}"


def _session(model: onnx.ModelProto, folder: str, threads: int) -> ort.InferenceSession:
    opts = session_options(threads, prepack=False)
    opts.add_session_config_entry("session.model_external_initializers_file_folder_path", folder)
    return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])


def _compare(before: onnx.ModelProto, after: onnx.ModelProto, folder: str, layout: CacheLayout,
             threads: int) -> list[dict]:
    a, b = _session(before, folder, threads), _session(after, folder, threads)
    rows = []
    for batch, past, seq in SIZES:
        feeds = example_feeds(layout, batch, past, seq, seed=past * 7 + seq)
        if batch > 1:   # the second row left-padded: masked keys must stay masked
            feeds["attention_mask"][1, :2] = 0
        ref, got = a.run(None, feeds), b.run(None, feeds)
        err = max(float(np.abs(g - r).max()) / max(float(np.abs(r).max()), 1e-6) for g, r in zip(got, ref))
        finite = all(np.isfinite(g).all() or not np.isfinite(r).all() for g, r in zip(got, ref))
        rows.append({"batch": batch, "past": past, "sequence": seq, "max_rel_error": err if finite else float("inf")})
    del a, b
    release_memory()
    return rows


__all__ = ["fuse_decoder", "fusion_summary"]
