"""ChannelGroups (analysis) and PruneChannels (structured pruning on the ONNX graph).

    result = PruneChannels(PruneChannels.Config(amount=0.5)).run(graph, ctx)

removes the least important channel groups until `amount` of the MACs (or params) are gone,
keeping widths multiples of the target's `channel_multiple`; result.stats says, per layer
family, the widths before and after, and which channels were left alone and why.
"""
from __future__ import annotations

from dataclasses import dataclass
import numpy as np
import onnx_graphsurgeon as gs

from hewn.core.names import matches
from hewn.core.pass_infra import Analysis, Pass, PassResult

from hewn.passes.prune.channel_groups import ChannelAnalysis
from hewn.passes.prune.channel_rules import space_rows
from hewn.passes.prune.onnx_channels import analyze_graph, apply_onnx, probe_values
from hewn.passes.prune.prune_plan import PruneConfig, choose, group_scores, plan_stats
from hewn.passes.analysis.shape_inference import ShapeInfo


@dataclass
class ChannelGroups(Analysis):
    """The channel dependency analysis of an ONNX graph (see channel_groups.py)."""

    result: ChannelAnalysis

    @classmethod
    def compute(cls, graph: gs.Graph, ctx) -> "ChannelGroups":
        return cls(analyze_graph(graph, ctx))


class PruneChannels(Pass):
    name = "prune_channels"
    requires = (ShapeInfo, ChannelGroups)
    lossless = False
    Config = PruneConfig

    def run(self, graph: gs.Graph, ctx) -> PassResult:
        cfg = self.config
        analysis = ctx.analysis(ChannelGroups, graph).result
        families = [f for f in analysis.prunable() if not any(matches(label, cfg.exclude) for label in f.producers)]
        stats = {"blocked": analysis.summary()["blocked"], "families": len(analysis.families),
                 "prunable_families": len(families)}
        for item in stats["blocked"]:
            ctx.note(self.name, ", ".join(item["channels"][:3]), item["why"])
        if cfg.amount == 0 or not families:
            if not families:
                ctx.note(self.name, "model", "no prunable channel groups (see the blocked list)")
            return PassResult(False, stats)
        activations = None
        if cfg.importance == "activation":
            activations = activation_stats(graph, analysis, families, ctx)
        scores = group_scores(analysis, families, cfg.importance, activations)
        round_to = cfg.round_to or ctx.target.channel_multiple
        plan = choose(analysis, cfg, scores, round_to, families)
        if not plan.groups:
            stats.update({"reached": 0.0, "notes": plan.notes})
            return PassResult(False, stats)
        apply_onnx(graph, analysis, plan.groups, ctx.names, self.name)
        stats.update(plan_stats(analysis, plan, round_to, cfg))
        return PassResult(True, stats)


def activation_stats(graph: gs.Graph, analysis: ChannelAnalysis, families, ctx) -> dict:
    """space id -> mean |activation| per element, over the reference inputs (streamed: one
    running sum per space, never the activations of all samples)."""
    if ctx.reference is None:
        return {}
    wanted = {}
    for fam in families:
        for sid in fam.spaces:
            rec = analysis.spaces[sid]
            if not isinstance(analysis.view.tensors.get(rec.tensor), gs.Constant):
                wanted.setdefault(rec.tensor, []).append(sid)
    sums: dict[int, np.ndarray] = {}
    for values in probe_values(graph, wanted, ctx):
        for tensor, sids in wanted.items():
            x = np.abs(np.asarray(values[tensor], dtype=np.float64))
            for sid in sids:
                sums[sid] = sums.get(sid, 0) + space_rows(x, analysis.spaces[sid].axes).mean(1)
    return {sid: s / len(ctx.reference.feeds) for sid, s in sums.items()}
