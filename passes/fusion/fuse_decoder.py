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
from hewn.core.kv_cache import CacheLayout, example_feeds
from hewn.passes.cleanup.reshape_targets import constant_reshape_targets
from hewn.passes.fusion.fuse_cached_attention import fuse_cached_attention
from hewn.passes.fusion.fuse_gelu import fuse_gelu_tanh
from hewn.passes.fusion.fuse_rotary import fuse_rotary

# (name, rewrite, what each rewritten pattern becomes)
FUSIONS = (("reshape", constant_reshape_targets, "Reshape with a constant target"),
           ("attention", fuse_cached_attention, "Attention node (opset 23)"),
           ("rotary", fuse_rotary, "RotaryEmbedding node (opset 23)"),
           ("gelu", fuse_gelu_tanh, "Gelu(approximate=tanh) node (opset 20)"))
# prefill, one decode step, a batch with a past, a past longer than small sliding windows
SIZES = ((1, 0, 7), (1, 7, 1), (2, 5, 3), (1, 40, 2))
TOLERANCE = 1e-4     # relative to the largest value of each output


def fuse_decoder(model: onnx.ModelProto, folder: str, layout: CacheLayout, threads: int = 2) -> tuple[onnx.ModelProto, dict]:
    """`model` (weights maybe external in `folder`, never read here) with each rewrite of FUSIONS
    applied in turn, and a report per rewrite: how many, into what, what was left and why, the
    verification. Each is checked against the graph it started from and kept only when it matches;
    one that fails to build or to run leaves the graph as it was."""
    report, reference = {}, None
    for name, fusion, into in FUSIONS:
        try:
            candidate, rep = fusion(onnx.ModelProto.FromString(model.SerializeToString()))
            rep["into"] = into
            if not rep["fused"]:
                report[name] = rep
                continue
            if reference is None:   # the accepted graph's outputs, computed once until a fusion replaces it
                reference = _outputs(model, folder, layout, threads)
            outputs = _outputs(candidate, folder, layout, threads)
        except Exception as exc:  # noqa: BLE001 - a rewrite ORT or the converter refuses leaves the graph as it was
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            report[name] = {"fused": 0, "into": into, "dropped": f"could not be built or run: {first}"}
            continue
        checks = _compare(reference, outputs)
        worst = max(c["max_rel_error"] for c in checks)
        rep["checks"] = checks
        if worst <= TOLERANCE:
            model, reference = candidate, outputs
        else:
            rep.update(fused=0, dropped=f"outputs differ from the unfused graph by {worst:.1e} > {TOLERANCE}")
        report[name] = rep
    return model, report


def fusion_summary(report: dict) -> str:
    parts = []
    for name, rep in report.items():
        if rep.get("dropped"):
            parts.append(f"{name} not fused ({rep['dropped']})")
        elif rep.get("fused"):
            parts.append(f"{rep['fused']} {name} -> {rep['into']}")
        if rep.get("left"):
            parts.append(f"{len(rep['left'])} {name} left ({rep['left'][0]['reason']})")
    return ", ".join(parts) or "nothing matched"


def _session(model: onnx.ModelProto, folder: str, threads: int) -> ort.InferenceSession:
    opts = session_options(threads, prepack=False)
    opts.add_session_config_entry("session.model_external_initializers_file_folder_path", folder)
    return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])


def _outputs(model: onnx.ModelProto, folder: str, layout: CacheLayout, threads: int) -> list[list[np.ndarray]]:
    """Every output of `model` at each of SIZES (the same seeded feeds for every graph)."""
    session = _session(model, folder, threads)
    out = [session.run(None, _feeds(layout, *size)) for size in SIZES]
    del session
    release_memory()
    return out


def _feeds(layout: CacheLayout, batch: int, past: int, seq: int) -> dict:
    feeds = example_feeds(layout, batch, past, seq, seed=past * 7 + seq)
    if batch > 1:   # the second row left-padded: masked keys must stay masked
        feeds["attention_mask"][1, :2] = 0
    return feeds


def _compare(reference: list, outputs: list) -> list[dict]:
    rows = []
    for (batch, past, seq), ref, got in zip(SIZES, reference, outputs):
        err = max(float(np.abs(g - r).max()) / max(float(np.abs(r).max()), 1e-6) for g, r in zip(got, ref))
        finite = all(np.isfinite(g).all() or not np.isfinite(r).all() for g, r in zip(got, ref))
        rows.append({"batch": batch, "past": past, "sequence": seq, "max_rel_error": err if finite else float("inf")})
    return rows


__all__ = ["fuse_decoder", "fusion_summary"]
