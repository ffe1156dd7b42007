"""FuseTransformer: rewrite transformer blocks into the fused contrib ops ORT's CPU kernels run
fastest — SkipLayerNormalization (residual Add + LayerNorm, with the bias), BiasGelu, exact Gelu,
Attention/MultiHeadAttention and EmbedLayerNormalization where the exporter's pattern allows.

The pattern matching is ONNX Runtime's own (`onnxruntime.transformers.optimizer`, fusions only:
opt_level 0, no session rewrite), since it tracks the kernels it targets; hewn decides when to
run it, keeps only exact fusions (no tanh Gelu approximation), asks for MultiHeadAttention so the
Q/K/V projections stay MatMuls that int8 can still reach, and verifies the result like any pass.
"""
from __future__ import annotations

import contextlib
import io
import logging
from dataclasses import dataclass

import onnx_graphsurgeon as gs
from hewn.core import external
from hewn.core.ir import default_opset, missing_at_opset, to_model
from hewn.core.pass_infra import Pass, PassResult

FUSED = ("Attention", "MultiHeadAttention", "SkipLayerNormalization", "BiasGelu", "Gelu", "FastGelu",
         "EmbedLayerNormalization", "LayerNormalization", "SkipSimplifiedLayerNormalization")


def looks_like_transformer(graph: gs.Graph) -> bool:
    ops = {n.op for n in graph.nodes}
    return "Softmax" in ops and ("LayerNormalization" in ops or "ReduceMean" in ops) and "MatMul" in ops


class FuseTransformer(Pass):
    name = "fuse_transformer"

    @dataclass(frozen=True)
    class Config:
        model_type: str = "bert"       # ORT's fusion family: bert (encoders), gpt2, vit, ...
        num_heads: int = 0             # 0: detected from the graph
        hidden_size: int = 0
        attention: bool = True
        embed_layer_norm: bool = True

    def run(self, graph: gs.Graph, ctx) -> PassResult:
        if not looks_like_transformer(graph):
            return PassResult(False, {"reason": "no attention block (Softmax + LayerNorm + MatMul)"})
        if any(n.domain == "com.microsoft" and n.op in FUSED for n in graph.nodes):
            ctx.note(self.name, "model", "the model already holds ORT contrib ops; not fused again")
            return PassResult(False, {"already_fused": True})
        on_disk = [t.name for t in graph.tensors().values() if external.on_disk(t)]
        if on_disk:  # ORT's fusion scripts read weights by paths relative to the working directory
            ctx.note(self.name, "model", f"{len(on_disk)} weights are external data kept on disk; ORT's fusion "
                                         f"scripts cannot read them in place, so no fusion was attempted")
            return PassResult(False, {"reason": "weights on disk (external data)"})
        from onnxruntime.transformers.fusion_options import FusionOptions
        from onnxruntime.transformers.optimizer import optimize_model

        cfg = self.config
        options = FusionOptions(cfg.model_type)
        options.enable_gelu_approximation = False   # FastGelu's tanh form changes outputs
        options.enable_attention = cfg.attention
        options.use_multi_head_attention = True
        options.enable_embed_layer_norm = cfg.embed_layer_norm
        model = to_model(graph, ir_version=ctx.ir_version)
        before = _counts(model)
        with _quiet():
            fused = optimize_model(model, model_type=cfg.model_type, num_heads=cfg.num_heads,
                                   hidden_size=cfg.hidden_size, optimization_options=options, opt_level=0)
        counts = {op: n for op, n in fused.get_fused_operator_statistics().items() if n}
        after = _counts(fused.model)
        new_ops = {op: after.get(op, 0) - before.get(op, 0) for op in FUSED if after.get(op, 0) > before.get(op, 0)}
        if not new_ops:
            return PassResult(False, {"fused": {}, "reason": "ORT's fusion patterns matched nothing"})
        missing = missing_at_opset(fused.model)
        if missing:  # ORT's fusions emit LayerNormalization whatever the model's opset is
            ctx.note(self.name, "model", f"ORT's fusions would emit {', '.join(missing)}, which the model's opset "
                                         f"{default_opset(fused.model)} does not have; left unfused")
            return PassResult(False, {"fused": {}, "reason": f"{', '.join(missing)} not in the model's opset"})
        new = gs.import_onnx(fused.model)
        graph.nodes, graph.inputs, graph.outputs = new.nodes, new.inputs, new.outputs
        graph.cleanup().toposort()
        return PassResult(True, {"fused": new_ops, "ort_statistics": counts,
                                 "nodes_before": sum(before.values()), "nodes_after": len(graph.nodes)})


def _counts(model) -> dict[str, int]:
    counts: dict[str, int] = {}
    for node in model.graph.node:
        counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return counts


@contextlib.contextmanager
def _quiet():
    """ORT's optimizer logs and prints per fusion; hewn reports the counts instead."""
    logger = logging.getLogger("onnxruntime.transformers")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        logger.setLevel(level)
