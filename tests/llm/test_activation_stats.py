"""Calibration statistics streamed in chunks over the cache equal those of whole windows."""
from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
from onnx import helper

from hewn.core.kv_cache import cache_feeds
from hewn.frontends.causal_lm import export_causal_lm
from hewn.passes.quant.weight_only.stats import activation_stats
from hewn.passes.quant.weight_only.rewrite import find_targets
from tests.llm.tiny import tiny_lm


def test_hessians_match_whole_window_products(tmp_path):
    path = tmp_path / "lm.onnx"
    layout = export_causal_lm(tiny_lm("gemma3"), str(path))   # sliding window of 8: the cache matters
    model = onnx.load(path)
    targets, _ = find_targets(model, base_dir=str(tmp_path))
    inputs = list(dict.fromkeys(t.input for t in targets if t.kind == "matmul"))
    windows = [np.random.default_rng(i).integers(0, 384, n) for i, n in enumerate((300, 40))]
    stats = activation_stats(model, str(tmp_path), inputs, layout, windows)
    assert [o.name for o in model.graph.output] == [o.name for o in onnx.load(path).graph.output]  # restored

    probe = onnx.load(path)
    probe.graph.output.extend(helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, None) for n in inputs)
    session = ort.InferenceSession(probe.SerializeToString(), providers=["CPUExecutionProvider"])
    sums = {n: 0 for n in inputs}
    for w in windows:   # one run per whole window, no cache
        for n, v in zip(inputs, session.run(inputs, cache_feeds(w[None], layout.empty_past(), 0))):
            x = v.reshape(-1, v.shape[-1]).astype(np.float64)
            sums[n] = sums[n] + x.T @ x
    for n in inputs:
        want = sums[n] / 340
        np.testing.assert_allclose(stats[n][0], want, rtol=1e-4, atol=1e-6 * np.abs(want).max())
        assert 0 < stats[n][1][32] < 1e-2      # int8 per-block error of the activations, relative
