"""hewn's passes and analyses, one folder per technique (ONNX and torch sides side by side):

    analysis/  ShapeInfo, CostModel (the one MAC model), CheckOpSupport
    cleanup/   FoldConstants, RemoveIdentity, EliminateDeadNodes, FoldBatchNorm, FoldRedundantPairs, StaticShapes,
               FoldPadIntoConv
    prune/     channel dependency rules and groups, PruneChannels (ONNX), prune_torch (fx), dead channels, Sparsify
    quant/     QuantSpec/schemes, Calibrate, InsertQDQ, Quantize (+ mixed precision), SmoothQuant, Float16
    lowrank/   SVDSplit (ONNX), svd_split_torch (fx)
    fusion/    FuseTransformer, FuseAttention
    planner/   sensitivity, the budget planner (PlanStructure on ONNX, plan_torch on fx), the budget split
    distill/   knowledge distillation (DistillConfig, distill)

REGISTRY maps the names used in pipelines and `passes=[...]` to classes. Pass authors find the
infrastructure here too: Pass, PassResult, Analysis, Context, PassManager, build_pipeline, and
to_graph / to_model (ModelProto <-> onnx-graphsurgeon Graph).
"""
from __future__ import annotations

from typing import Mapping, Sequence

from hewn.core.ir import to_graph, to_model
from hewn.core.manager import FixedPoint, Instrument, PassManager, PipelineItem
from hewn.core.pass_infra import Analysis, Context, Pass, PassResult, Reference
from hewn.core.pipeline import build_pipeline as _build
from hewn.passes.analysis.cost_model import CostModel
from hewn.passes.analysis.op_support import CheckOpSupport
from hewn.passes.analysis.shape_inference import ShapeInfo
from hewn.passes.cleanup.constant_folding import FoldConstants
from hewn.passes.cleanup.dead_code import EliminateDeadNodes
from hewn.passes.cleanup.fold_batchnorm import FoldBatchNorm
from hewn.passes.cleanup.fold_pad import FoldPadIntoConv
from hewn.passes.cleanup.redundant_pairs import FoldRedundantPairs
from hewn.passes.cleanup.remove_identity import RemoveIdentity
from hewn.passes.cleanup.static_shapes import StaticShapes
from hewn.passes.fusion.fuse_attention import FuseAttention
from hewn.passes.fusion.fuse_transformer import FuseTransformer
from hewn.passes.lowrank.svd_split import SVDSplit
from hewn.passes.planner.plan_structure import PlanStructure
from hewn.passes.prune.dead_channels import EliminateDeadChannels
from hewn.passes.prune.prune_channels import ChannelGroups, PruneChannels
from hewn.passes.prune.sparsify import Sparsify
from hewn.passes.quant.calibrate import Calibrate
from hewn.passes.quant.float16 import Float16
from hewn.passes.quant.insert_qdq import InsertQDQ
from hewn.passes.quant.quantize import Quantize
from hewn.passes.quant.smooth_quant import SmoothQuant

REGISTRY: dict[str, type[Pass]] = {cls.name: cls for cls in (
    FoldConstants, RemoveIdentity, EliminateDeadNodes, FoldBatchNorm, FoldRedundantPairs, PruneChannels,
    EliminateDeadChannels, InsertQDQ, Quantize, SmoothQuant, SVDSplit, PlanStructure, FuseTransformer,
    FuseAttention, Float16, Sparsify, StaticShapes, CheckOpSupport, FoldPadIntoConv,
)}


def build_pipeline(steps: Sequence, configs: Mapping[str, Mapping] | None = None) -> list[PipelineItem]:
    """PassManager items from pass names, (name, {options}) pairs, Pass instances, or tuples of
    those run as a fixed-point group; names are looked up in REGISTRY."""
    return _build(steps, REGISTRY, configs)


__all__ = ["REGISTRY", "build_pipeline", "to_graph", "to_model", "Pass", "PassResult", "Analysis", "Context", "Reference", "PassManager",
           "FixedPoint", "Instrument", "FoldConstants", "RemoveIdentity", "EliminateDeadNodes", "FoldBatchNorm",
           "FoldRedundantPairs", "ShapeInfo", "CostModel", "ChannelGroups", "PruneChannels", "EliminateDeadChannels",
           "InsertQDQ", "Calibrate", "Quantize", "SmoothQuant", "SVDSplit", "PlanStructure", "FuseTransformer",
           "FuseAttention", "Float16", "Sparsify", "StaticShapes", "CheckOpSupport", "FoldPadIntoConv"]
