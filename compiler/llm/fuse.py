"""Decoder fusions for the cpu target (constant reshape targets, attention over the KV cache,
rotary embeddings, tanh-approximated GELU), each verified against the graph before it in ONNX Runtime.

A fusion that changes the logits or the cache beyond float tolerance at any checked size is
dropped, and the report says so; the graph stays as it was exported.
"""
from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
from hewn.core.runtime import release_memory, session_options
from hewn.frontends.causal_lm import CacheLayout, example_feeds
from hewn.passes.cleanup.reshape_targets import constant_reshape_targets
from hewn.passes.fusion.fuse_cached_attention import fuse_cached_attention
from hewn.passes.fusion.fuse_gelu import fuse_gelu_tanh
from hewn.passes.fusion.fuse_rotary import fuse_rotary

FUSIONS = (("reshape", constant_reshape_targets), ("attention", fuse_cached_attention), ("rotary", fuse_rotary),
           ("gelu", fuse_gelu_tanh))
# prefill, one decode step, a batch with a past, a past longer than small sliding windows
SIZES = ((1, 0, 7), (1, 7, 1), (2, 5, 3), (1, 40, 2))
TOLERANCE = 1e-4     # relative to the largest value of each output


def fuse_decoder(model: onnx.ModelProto, folder: str, layout: CacheLayout, threads: int = 2) -> tuple[onnx.ModelProto, dict]:
    """`model` (weights maybe external in `folder`, never read here) with its attention and rotary
    embeddings fused, and a report per fusion: how many, what was left and why, the verification.
    Each fusion is checked against the graph before it and kept only when it matches."""
    report = {}
    for name, fusion in FUSIONS:
        candidate, rep = fusion(onnx.ModelProto.FromString(model.SerializeToString()))
        if rep["fused"]:
            try:
                checks = _compare(model, candidate, folder, layout, threads)
            except Exception as exc:  # noqa: BLE001 - ORT refusing the fused graph leaves it as it was
                first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                rep = {**rep, "fused": 0, "dropped": f"ONNX Runtime could not run it: {first}"}
            else:
                worst = max(c["max_rel_error"] for c in checks)
                rep = {**rep, "checks": checks}
                if worst <= TOLERANCE:
                    model = candidate
                else:
                    rep.update(fused=0, dropped=f"outputs differ from the unfused graph by {worst:.1e} > {TOLERANCE}")
        report[name] = rep
    return model, report


def fusion_summary(report: dict) -> str:
    parts = []
    for name, what in (("reshape", "a constant target"), ("attention", "Attention"), ("rotary", "RotaryEmbedding"),
                       ("gelu", "Gelu(tanh)")):
        rep = report.get(name, {})
        if rep.get("dropped"):
            parts.append(f"{name} not fused ({rep['dropped']})")
        elif rep.get("fused"):
            parts.append(f"{rep['fused']} {name} -> {what}")
        if rep.get("left"):
            parts.append(f"{len(rep['left'])} {name} left ({rep['left'][0]['reason']})")
    return ", ".join(parts) or "nothing matched"


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
