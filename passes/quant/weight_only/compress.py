"""WeightOnly: the weight-only search (search.py) as a lossy pass of the pass manager.

Its budget is the perplexity budget, measured inside the pass on the calibration windows
(ctx.calibration: hewn.core.kv_cache.TokenWindows); the manager's guard then checks the result's
outputs for NaN/Inf like any lossy pass's. The graph is written once to a private folder (external
weights streamed from their files, never loaded together) so ORT can run it for the statistics
and the perplexity probes; the graph is then replaced by the compressed model.
"""
from __future__ import annotations

import tempfile
from pathlib import Path

import onnx_graphsurgeon as gs

from hewn.core import external, progress
from hewn.core.errors import ConfigError
from hewn.core.ir import to_graph, to_model
from hewn.core.kv_cache import TokenWindows
from hewn.core.pass_infra import Context, Pass, PassResult
from hewn.passes.quant.weight_only.search import Prepared, WeightConfig


class WeightOnly(Pass):
    name = "weight_only"
    lossless = False
    Config = WeightConfig

    def run(self, graph: gs.Graph, ctx: Context) -> PassResult:
        calib = ctx.calibration
        if not isinstance(calib, TokenWindows):
            raise ConfigError("weight_only compresses a causal LM's weights under a perplexity budget: it needs "
                              "calib_data= as text (with tokenizer=) or token ids")
        with tempfile.TemporaryDirectory(prefix="hewn-weights-") as tmp:
            path = Path(tmp) / "float.onnx"
            external.write(to_model(graph.copy(), ir_version=ctx.ir_version), path, "float.onnx.data")
            plan = Prepared(str(path), calib.layout, calib.windows, self.config, progress.say,
                            float_ppl=calib.float_perplexity).choose()
        compressed = to_graph(plan.model)
        graph.__dict__.clear()
        graph.__dict__.update(compressed.__dict__)   # in place: callers hold this Graph object
        return PassResult(True, plan.report)

    def budget(self, ctx: Context):
        return None   # the perplexity budget is kept inside (bisection on measured perplexity)


__all__ = ["WeightOnly"]
